"""Films shown again from the film store: a thumbnail for the history, the film at full
resolution for the viewer, and the heatmap overlay drawn on either from the stored map."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

THUMBNAIL_SIDE = 256
"""Longest side of the history's thumbnails."""


def heat_png(heat: np.ndarray) -> bytes:
    """A class activation map (values in [0, 1]) as an 8-bit grey PNG: small, lossless enough
    for an overlay, and content-hashed like the films."""
    buf = io.BytesIO()
    levels = np.clip(np.asarray(heat, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(levels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def heat_from_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def full_resolution(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The film at its own resolution, upright, grey (as the model read it): JPEG, PNG or
    DICOM, with the decoder's checks (ImageDecodeError naming the film otherwise)."""
    from pneumo.data.decode import load_grey

    return load_grey(data, name=name, max_pixels=max_pixels)


def thumbnail(data: bytes, name: str, max_pixels: int, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """The film, longest side ``side`` (JPEGs decoded at draft size: fast for originals)."""
    from pneumo.data.decode import load_grey

    img = load_grey(data, name=name, max_pixels=max_pixels, draft_size=(side, side))
    img.thumbnail((side, side))
    return img


def with_overlay(img: Image.Image, heat_data: bytes | None) -> Image.Image:
    """``img`` with the stored heatmap drawn over it (as on the results page); ``img`` itself
    when there is no map."""
    from pneumo.inference.cam import overlay

    if heat_data is None:
        return img
    return overlay(img, heat_from_png(heat_data))


def png(img: Image.Image) -> bytes:
    """Lossless, so the full-resolution view shows every pixel of the film."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
