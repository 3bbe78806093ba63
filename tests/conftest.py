"""Fixtures shared by the whole suite: the real data set (skipped when absent) and small
generated data sets in the official layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _real_root() -> Path | None:
    root = Path(os.environ.get("PNEUMO_DATA", SHARED / "chest_xray"))
    return root if (root / "train").is_dir() else None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The shared Kermany copy; tests using it skip with a reason when it is absent."""
    root = _real_root()
    if root is None:
        pytest.skip("real data not found: set PNEUMO_DATA to the chest_xray folder")
    return root


@pytest.fixture(scope="session")
def originals_dir() -> Path:
    """Full-size original JPEGs (../shared/data/originals)."""
    root = Path(os.environ.get("PNEUMO_ORIGINALS", SHARED / "originals"))
    if not root.is_dir():
        pytest.skip("original full-size images not found: set PNEUMO_ORIGINALS")
    return root


def make_xray(seed: int, label: int, size: int = 64) -> Image.Image:
    """A synthetic grey 'X-ray': PNEUMONIA images get a bright blob, so tiny models can learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.05) + rng.normal(0, 12, (size, size))
    if label == 1:
        cx, cy = rng.uniform(0.25, 0.75, 2)
        img += 80 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


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


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A small generated data set: train 24/24, val 4/4, test 6/6 images of 64x64."""
    return write_dataset(tmp_path / "chest_xray", {"train": (24, 24), "val": (4, 4), "test": (6, 6)})
