"""Helpers for the data-layer tests: small generated images and broken files of each kind.
(Not named conftest/helpers: test folders have no __init__.py, so module names must be unique.)"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def grey_picture(seed: int = 0, size: int = 64) -> np.ndarray:
    """A uint8 picture using the full 0..255 range (so 16-bit stretching is exact)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size), dtype=np.uint8)
    img[0, 0], img[0, 1] = 0, 255
    return img


def jpeg_bytes(seed: int = 1, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(grey_picture(seed, size)).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


# kind -> (file content, words the reported reason must contain)
BAD_FILES = {
    "zero-byte": (lambda: b"", "empty file"),
    "non-image": (lambda: b"name,label\nfoo,bar\n", "not an image"),
    "truncated": (lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2], "truncated"),
    "corrupt": (lambda: b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9", "not an image"),
}


def add_bad_file(root: Path, kind: str, split: str = "train", label: str = "NORMAL") -> Path:
    """Write a broken file of ``kind``, with a valid Kermany name, into ``root/split/label``."""
    path = root / split / label / f"IM-9{len(kind):03d}-0001.jpeg"
    path.write_bytes(BAD_FILES[kind][0]())
    return path
