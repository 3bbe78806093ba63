"""Decode any supported X-ray file (JPEG, PNG, DICOM; grey, RGB, RGBA, palette, 16-bit) into one
consistent 8-bit image, with the checks a server needs: size caps and decompression bombs."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import ImageDecodeError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
DICOM_SUFFIXES = (".dcm", ".dicom")
MAX_PIXELS = 60_000_000
"""Refuse images above this many pixels before decoding them (decompression bombs)."""
MIN_SIDE = 16
"""Smaller images cannot be X-rays worth classifying."""

Source = str | Path | bytes


def _name(source: Source, name: str | None) -> str:
    if name:
        return name
    return "<bytes>" if isinstance(source, bytes) else str(source)


def read_bytes(source: Source, label: str) -> bytes:
    """The bytes of a path (or the bytes given), with missing, unreadable and empty files as
    ImageDecodeError."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageDecodeError(label, "file not found") from None
        except IsADirectoryError:
            raise ImageDecodeError(label, "is a directory, not an image") from None
        except OSError as exc:
            raise ImageDecodeError(label, f"cannot read file ({exc.strerror})") from None
    if not data:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    return data


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    """Refuse absurd dimensions before any pixel is decoded (bombs) and thumbnails."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            label, f"image too large ({width}x{height} pixels, limit {max_pixels:,})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(label, f"image too small ({width}x{height} pixels)")


def open_image(fp, label: str, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with each failure turned into an ImageDecodeError."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(label, f"image too large (over {max_pixels:,} pixels)") from None
    except Exception as exc:
        raise ImageDecodeError(label, f"cannot open image ({exc})") from None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Stretch any numeric grey array to 0..255 over its own range (X-rays rarely use 16 bits)."""
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.clip((array - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _decode_dicom(data: bytes, label: str, max_pixels: int) -> Image.Image:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - pydicom is a core dependency
        raise ImageDecodeError(label, "DICOM support needs pydicom: pip install pydicom") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        check_size(int(ds.Columns), int(ds.Rows), label, max_pixels)
        pixels = ds.pixel_array
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(label, f"not a readable DICOM image ({exc})") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    elif pixels.ndim != 2:
        raise ImageDecodeError(label, f"DICOM pixel data of shape {pixels.shape} is not one image")
    pixels = apply_modality_lut(pixels, ds)
    pixels = apply_voi_lut(pixels, ds)
    grey = _to_uint8(np.asarray(pixels))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1 stores bright bone as low values
    return Image.fromarray(grey, mode="L")


def to_grey(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit grey; colour X-rays are grey pictures saved as RGB."""
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def load_grey(
    source: Source,
    *,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Decode ``source`` (path or bytes) to an 8-bit grey PIL image.

    ``draft_size`` lets the JPEG decoder scale down by powers of two while decoding (much faster
    for full-size originals); the result is never smaller than ``draft_size``.
    Raises ImageDecodeError naming the file and the reason.
    """
    label = _name(source, name)
    data = read_bytes(source, label)
    if is_dicom(data):
        return _decode_dicom(data, label, max_pixels)
    img = open_image(io.BytesIO(data), label, max_pixels)
    check_size(*img.size, label, max_pixels)
    if draft_size is not None and img.format == "JPEG":
        img.draft("L", draft_size)
    try:
        img.load()  # truncated files fail here (Pillow's default), never padded with grey
    except Exception as exc:
        raise ImageDecodeError(label, f"corrupt or truncated image ({exc})") from None
    return to_grey(img)


def load_image(source: Source, **kwargs) -> Image.Image:
    """Decode ``source`` to a 3-channel RGB image with R = G = B (what the backbones expect)."""
    return load_grey(source, **kwargs).convert("RGB")


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says, read without decoding the pixels."""

    format: str
    """File format as Pillow names it (JPEG, PNG) or DICOM."""
    width: int
    """Width in pixels."""
    height: int
    """Height in pixels."""
    mode: str
    """Pillow mode of the stored pixels (L, RGB, I;16, P, ...)."""


_TAIL = 64
"""Bytes read from the end of a file to check that it is complete."""


def _check_complete(fmt: str, tail: bytes, label: str) -> None:
    """A truncated JPEG lacks its end-of-image marker and a truncated PNG its IEND chunk; checking
    the last bytes finds cut-off downloads without decoding the pixels."""
    if fmt == "JPEG" and not tail.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        raise ImageDecodeError(label, "truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageDecodeError(label, "truncated PNG (no IEND chunk)")


def probe_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check an image file cheaply: header (format, size, mode) and file end, no pixel decoding.

    Finds missing, empty, non-image, truncated, too small and too large files (the same limits as
    ``load_grey``) in well under a millisecond per file; corruption in the middle of the pixel
    data is only found by decoding. Raises ImageDecodeError naming the file and the reason.
    """
    label = str(path)
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageDecodeError(label, "is a directory, not an image")
        if size == 0:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        with path.open("rb") as f:
            head = f.read(132)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except ImageDecodeError:
        raise
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file ({exc.strerror})") from None
    if is_dicom(head):
        return _probe_dicom(path, label)
    with open_image(path, label, max_pixels) as img:
        fmt, (width, height), mode = img.format or "?", img.size, img.mode
    check_size(width, height, label, max_pixels)
    _check_complete(fmt, tail, label)
    return ImageInfo(fmt, width, height, mode)


def _probe_dicom(path: Path, label: str) -> ImageInfo:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return ImageInfo("DICOM", int(ds.Columns), int(ds.Rows), str(ds.PhotometricInterpretation))
    except Exception as exc:
        raise ImageDecodeError(label, f"not a readable DICOM image ({exc})") from None
