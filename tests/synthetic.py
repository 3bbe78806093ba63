"""Generated test inputs: synthetic X-rays, data sets in the official layout, tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_xray(seed: int, label: int, size: int = 64) -> Image.Image:
    """A synthetic grey 'X-ray': PNEUMONIA images get a bright blob, so tiny models can learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.05) + rng.normal(0, 12, (size, size))
    if label == 1:
        cx, cy = rng.uniform(0.25, 0.75, 2)
        img += 80 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def colour_photo(seed: int = 1, size: int = 96) -> Image.Image:
    """A very colourful picture (a cat photo stand-in): no chest X-ray looks like this, so it
    is flagged out of distribution whatever the model."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = 230
    arr[..., 1] = rng.integers(0, 80, (size, size))
    arr[size // 2 :, :, 2] = 220
    return Image.fromarray(arr, mode="RGB")


def write_dataset(root: Path, counts: dict[str, tuple[int, int]], size: int = 64) -> Path:
    """Write ``{split: (n_normal, n_pneumonia)}`` images with Kermany-style patient names."""
    seed = 0
    for split, (n_normal, n_pneu) in counts.items():
        for label, name, n in ((0, "NORMAL", n_normal), (1, "PNEUMONIA", n_pneu)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                if label == 0:
                    fname = f"IM-{seed:04d}-0001.jpeg"
                else:
                    kind = "bacteria" if i % 2 else "virus"
                    fname = f"person{seed}_{kind}_{i}.jpeg"
                make_xray(seed, label, size).convert("RGB").save(folder / fname, quality=90)
    return root


def build_tiny_model(
    root: Path, *, seed: int = 0, with_ood: bool = True, with_layout: bool = False
) -> Path:
    """A `test_efficientnet` model dir (64x64 input) saved with save_model, as training would;
    ``with_layout`` adds the layout check, fitted on ``make_xray`` films."""
    import torch

    from pneumo.models.checkpoint import ModelMetadata, save_model
    from pneumo.models.ood import fit_ood
    from pneumo.models.preprocess import DataConfig
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
        layouts = None
        if with_layout:
            from pneumo.models.ood import layout_vector

            films = np.stack([layout_vector(make_xray(seed + i, i % 2, 96)) for i in range(60)])
            layouts = (films[:40], films[40:])
        tensors, settings = fit_ood(feats[:30], feats[30:], k=3, layouts=layouts)
        meta.ood = settings
        extra = {k: torch.from_numpy(v) for k, v in tensors.items()}
    return save_model(root, model, meta, extra_tensors=extra)
