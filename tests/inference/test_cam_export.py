"""Heatmaps from the exported graph's class activation map, without torch at serving time: they
must be torch Grad-CAM's maps (the reference in pneumo.inference.cam) on every backend.

The measure, on the bundled model and real films: the Pearson correlation of the two maps
upsampled to the input size is above 0.999, the hottest cell is the same, and no cell differs
by more than 1e-3 (maps are scaled to [0, 1]). Measured: about 5e-6."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthetic import make_xray

BACKENDS = ["onnx", "openvino", "torch"]


def _agreement(ours: np.ndarray, reference: np.ndarray, size: tuple[int, int]):
    """(Pearson r of the upsampled maps, same hottest cell, largest cell difference)."""

    def up(m):
        return np.asarray(Image.fromarray(m, mode="F").resize(size, Image.BILINEAR)).ravel()

    r = float(np.corrcoef(up(ours), up(reference))[0, 1])
    same_peak = np.argmax(ours) == np.argmax(reference)
    return r, bool(same_peak), float(np.abs(ours - reference).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_heatmaps_are_grad_cams_maps_on_every_backend(tiny_model, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    from pneumo.inference.cam import GradCam
    from pneumo.inference.engine import load_predictor

    predictor = load_predictor(tiny_model, backend=backend, precision="fp32")
    images = [make_xray(7 + i, i % 2, size=80) for i in range(5)]
    targets = [0, 1, 1, 0, 1]
    ours = predictor.heatmaps(images, targets)
    reference = GradCam.from_dir(tiny_model).heatmaps([i.convert("RGB") for i in images], targets)
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape and a.min() >= 0 and a.max() <= 1
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_head_that_is_not_average_pooled_gives_no_map():
    """A map from another head would explain something the network does not compute."""
    import torch

    from pneumo.errors import ModelError
    from pneumo.inference.export import check_cam_head, with_features_and_cam
    from pneumo.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("test_efficientnet", pretrained=False).eval()
    check_cam_head(with_features_and_cam(net), 64, 64)  # the registry's heads pass
    net.reset_classifier(2, global_pool="max")
    with pytest.raises(ModelError, match="not a global-average-pooled linear layer"):
        check_cam_head(with_features_and_cam(net), 64, 64)


def test_heatmaps_check_their_targets(onnx_predictor):
    images = [make_xray(1, 0, size=64)]
    with pytest.raises(ValueError, match="out of range"):
        onnx_predictor.heatmaps(images, [2])
    with pytest.raises(ValueError, match="one target class per image"):
        onnx_predictor.heatmaps(images, [0, 1])


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_bundled_model_maps_match_grad_cam_on_real_films(real_data_root, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    from pneumo.data.decode import load_grey
    from pneumo.inference.cam import GradCam
    from pneumo.inference.engine import load_predictor

    films = sorted((real_data_root / "train").glob("*/*.jpeg"))[::400][:10]
    assert len(films) == 10
    predictor = load_predictor(backend=backend, precision="fp32")
    images = [load_grey(f, draft_size=predictor.draft_size) for f in films]
    preds = predictor.predict_images(images)
    names = predictor.metadata.class_names
    targets = [names.index(p.label) for p in preds]
    assert set(targets) == {0, 1}  # maps for both classes are compared
    ours = predictor.heatmaps(images, targets)
    reference = GradCam.from_dir().heatmaps([i.convert("RGB") for i in images], targets)
    h, w = predictor.metadata.data_config.input_size
    for film, a, b in zip(films, ours, reference, strict=True):
        r, same_peak, diff = _agreement(a, b, (w, h))
        assert r > 0.999 and same_peak and diff < 1e-3, (film.name, r, same_peak, diff)
