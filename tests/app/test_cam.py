"""Grad-CAM: the heatmap lands where the evidence is, for any registry backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo.inference.cam import GradCam, overlay
from pneumo.models.checkpoint import ModelMetadata, save_model
from pneumo.models.preprocess import DataConfig
from pneumo.models.registry import create_model

CFG = DataConfig((64, 64), (0.5,) * 3, (0.5,) * 3)


class BrightnessModel(torch.nn.Module):
    """Features = pixel brightness on an 8x8 grid; PNEUMONIA logit = mean brightness."""

    def forward_features(self, x):
        return torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8)

    def forward_head(self, fmap, pre_logits=False):
        pooled = fmap.mean(dim=(2, 3))
        return torch.cat([-pooled, pooled], dim=1)


def _blob(cx: int, cy: int) -> Image.Image:
    arr = np.full((64, 64), 40, np.uint8)
    arr[cy - 6 : cy + 6, cx - 6 : cx + 6] = 250
    return Image.fromarray(arr, mode="L")


def test_heatmap_peaks_on_the_evidence():
    cam = GradCam(BrightnessModel(), ModelMetadata(backbone="test", data_config=CFG))
    top_left, bottom_right = cam.heatmaps([_blob(12, 12), _blob(50, 50)], [1, 1])
    assert top_left.shape == (8, 8)
    assert np.unravel_index(top_left.argmax(), top_left.shape) == (1, 1)
    assert np.unravel_index(bottom_right.argmax(), bottom_right.shape) == (6, 6)
    assert top_left.max() == pytest.approx(1.0)
    # For NORMAL the dark surroundings are the evidence, never the bright blob.
    (normal,) = cam.heatmaps([_blob(12, 12)], [0])
    assert normal[1, 1] == 0.0 and normal[6, 6] == pytest.approx(1.0)


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_resnet"])
def test_registry_models_from_a_model_dir(tmp_path, backbone):
    model = create_model(backbone, pretrained=False)
    save_model(tmp_path, model, ModelMetadata(backbone=backbone, data_config=CFG))
    cam = GradCam.from_dir(tmp_path)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200), np.uint8))
    (heat,) = cam.heatmaps([big], [1])
    assert heat.ndim == 2 and heat.min() >= 0.0 and heat.max() <= 1.0
    shown = overlay(big, heat)
    assert shown.size == big.size and shown.mode == "RGB"
    with pytest.raises(ValueError, match="out of range"):
        cam.heatmaps([big], [2])


def test_overlay_colours_only_the_hot_region():
    grey = Image.new("L", (100, 100), 128)
    cam = np.zeros((10, 10), np.float32)
    cam[0:3, 0:3] = 1.0
    out = np.asarray(overlay(grey, cam)).astype(int)
    assert (out[90, 90] == 128).all()  # cold: the X-ray unchanged
    r, g, b = out[5, 5]
    assert r > 180 and b < 100  # hot: red
