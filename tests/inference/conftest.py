"""A tiny randomly initialised model with OOD statistics, exported once per test session; the
ONNX cache points into a temporary folder so tests never write to the home directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def build_tiny_model(root: Path, *, seed: int = 0, with_ood: bool = True) -> Path:
    """A `test_efficientnet` model dir (64x64 input) saved with save_model, as training would."""
    import torch

    from pneumo.data.transforms import DataConfig
    from pneumo.inference.ood import fit_ood
    from pneumo.models.checkpoint import ModelMetadata, save_model
    from pneumo.models.registry import create_model

    torch.manual_seed(seed)
    model = create_model("test_efficientnet", pretrained=False).eval()
    with torch.no_grad():  # random heads answer ~0.5 for everything; spread the probabilities
        model.get_classifier().weight.mul_(40.0)
    meta = ModelMetadata(
        backbone="test_efficientnet",
        data_config=DataConfig((64, 64), (0.5,) * 3, (0.5,) * 3),
        threshold=0.5,
        temperature=1.5,
    )
    extra = {}
    if with_ood:
        # statistics fitted on the model's own features of grey noise images
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(rng.uniform(-1, 1, (40, 1, 64, 64)).astype(np.float32)).expand(
            -1, 3, -1, -1
        )
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
        tensors, settings = fit_ood(feats[:30], feats[30:], components=8)
        meta.ood = settings
        extra = {k: torch.from_numpy(v) for k, v in tensors.items()}
    return save_model(root, model, meta, extra_tensors=extra)


def make_xray(seed: int, label: int, size: int = 64) -> Image.Image:
    """A synthetic grey 'X-ray'; PNEUMONIA gets a bright blob (as in the root conftest)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.05) + rng.normal(0, 12, (size, size))
    if label == 1:
        cx, cy = rng.uniform(0.25, 0.75, 2)
        img += 80 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    import os

    path = tmp_path_factory.mktemp("pneumo-cache")
    old = os.environ.get("PNEUMO_CACHE")
    os.environ["PNEUMO_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PNEUMO_CACHE", None)
    else:
        os.environ["PNEUMO_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def onnx_predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model, backend="onnx")


@pytest.fixture(scope="session")
def torch_predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model, backend="torch")


@pytest.fixture
def xray_files(tmp_path) -> list[Path]:
    """Six generated grey X-rays in mixed formats and sizes (JPEG, PNG, one large JPEG)."""
    paths = []
    for i in range(6):
        img = make_xray(100 + i, i % 2, size=96 if i != 5 else 900)
        path = tmp_path / (f"x{i}.png" if i == 2 else f"x{i}.jpeg")
        img.save(path)
        paths.append(path)
    return paths
