"""DICOM files read with the checks a server needs: deflate bombs refused before pydicom
inflates them, dimensions checked before the pixels are decoded, compressions nothing here
decodes named, and pydicom's own complaints about a file kept off the user's terminal (the
user gets pneumo's one-line error; ``-v`` shows pydicom's notes as DEBUG lines)."""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from pneumo.data.decode import (
    MAX_FILE_BYTES,
    MAX_JPEG_SCANS,
    ImageInfo,
    _decoded_bytes,
    _reason,
    _to_uint8,
    check_size,
    decode_budget,
    mib,
    printable,
    read_bytes,
)
from pneumo.errors import ImageDecodeError
from pneumo.extras import missing_message


class _PydicomNotesToDebug(logging.Filter):
    """pydicom logs WARNING and ERROR lines (tracebacks too) about the file it reads, then
    either copes or raises; pneumo reports the outcome itself, in one line. Its lines become DEBUG records, shown
    only when pneumo logs at DEBUG (``-v``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("pneumo").isEnabledFor(logging.DEBUG)


_NOTES = _PydicomNotesToDebug()
# pydicom repeats each note as a UserWarning (``warn_and_log``), which would print on its own
_PYDICOM_WARNINGS = ("ignore", None, UserWarning, re.compile(r"pydicom(\.|$)"), 0)


def load_pydicom(label: str) -> ModuleType:
    """pydicom, with its notes about files routed to DEBUG; an install hint when it is missing.
    Done on first use, not at import: pneumo touches no library it is not using."""
    try:
        import pydicom
    except ImportError:
        raise ImageDecodeError(label, missing_message("dicom", "DICOM support")) from None
    import pydicom.pixels  # noqa: F401 - creates the decoders' loggers, which log tracebacks

    for name in list(logging.root.manager.loggerDict):
        if name == "pydicom" or name.startswith("pydicom."):
            logger = logging.getLogger(name)
            if _NOTES not in logger.filters:  # a logger's filters miss its children's records
                logger.addFilter(_NOTES)
    if _PYDICOM_WARNINGS not in warnings.filters:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    return pydicom


def read_header(data: bytes, label: str, *, pixels: bool = False):
    """The pydicom data set of a DICOM file's bytes (header only unless ``pixels``), deflate
    bombs refused first; ImageDecodeError naming the file for what pydicom cannot read."""
    pydicom = load_pydicom(label)
    check_deflated(data, label, MAX_FILE_BYTES)
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)
    except Exception as exc:
        raise ImageDecodeError(label, f"not a readable DICOM file ({_reason(exc)})") from None


def _geometry(ds, label: str) -> tuple[int, int, int, int]:
    """(columns, rows, frames, samples per pixel) of a DICOM data set, with a plain message
    for files that hold no image (reports, header-only files) or a broken header."""
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = "float pixel data, which is not supported" if kinds else "no pixel data"
        raise ImageDecodeError(label, f"DICOM file without an image ({what})")
    missing = [k for k in ("Rows", "Columns") if ds.get(k) is None]
    if missing:
        raise ImageDecodeError(label, f"DICOM image header lacks {' and '.join(missing)}")
    try:
        return (
            int(ds.Columns),
            int(ds.Rows),
            int(ds.get("NumberOfFrames") or 1),
            int(ds.get("SamplesPerPixel") or 1),
        )
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(label, f"DICOM image header is invalid ({exc})") from None


_DEFLATED = b"1.2.840.10008.1.2.1.99"
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def _meta_end(data: bytes) -> int:
    """Offset where the DICOM file meta group (0002,xxxx; explicit VR little endian) ends."""
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 2:
            return pos
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            if pos + 12 > len(data):
                break
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return min(pos, len(data))


def check_deflated(data: bytes, label: str, limit: int) -> None:
    """pydicom inflates a deflated data set whole and unbounded: a 256 KiB file can become
    gigabytes. Inflate it here first, 1 MiB at a time and discarding, to refuse such bombs."""
    end = _meta_end(data)
    if _DEFLATED not in data[132:end]:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[end:], 0
    try:
        while pending:
            total += len(inflater.decompress(pending, 1 << 20))
            if total > limit:
                raise ImageDecodeError(
                    label, f"deflated DICOM expands beyond {mib(limit)} (a zip bomb?)"
                )
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ImageDecodeError(label, f"corrupt deflated DICOM ({exc})") from None


def decode_dicom(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """The first frame of a DICOM file as 8-bit grey, modality and VOI LUTs applied, bright
    bone whatever the photometric interpretation."""
    ds = read_header(data, label, pixels=True)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    width, height, frames, samples = _geometry(ds, label)
    check_size(width, height, label, max_pixels)
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax.startswith("1.2.840.10008.1.2.4.5"):  # JPEG baseline/extended inside DICOM
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS * max(1, frames):
            raise ImageDecodeError(
                label, f"DICOM JPEG with {scans} scans (limit {MAX_JPEG_SCANS}): a decoding bomb?"
            )
    if frames > 1:
        check_size(width * frames, height, label, max_pixels)
    bits = int(ds.get("BitsAllocated") or 16)
    cost = _decoded_bytes(width * frames * samples, height, max(1, bits // 8)) * 4
    with decode_budget.hold(cost):
        try:
            pixels = ds.pixel_array
            if frames > 1 and pixels.ndim >= 3:
                pixels = pixels[0]  # a multi-frame file: the first frame is the image
            photometric = str(ds.get("PhotometricInterpretation", "")).upper()
            if photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                pixels = apply_color_lut(pixels, ds)
                samples = 3
            if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
                pixels = pixels[..., :3].mean(axis=-1)
            elif pixels.ndim != 2:
                raise ImageDecodeError(
                    label, f"DICOM pixel data of shape {pixels.shape} is not one image"
                )
            if samples == 1:
                pixels = apply_modality_lut(pixels, ds)
                pixels = apply_voi_lut(pixels, ds)
        except ImageDecodeError:
            raise
        except (NotImplementedError, RuntimeError) as exc:
            text = str(exc)
            if "raised by all available plugins" in text:  # decoders exist, the data is bad
                raise ImageDecodeError(
                    label, f"corrupt DICOM pixel data (no {_syntax_name(ds)} decoder could read it)"
                ) from None
            if "plugin" not in text and "not supported" not in text:
                raise ImageDecodeError(
                    label, f"cannot decode the DICOM pixels ({_reason(exc)})"
                ) from None
            raise ImageDecodeError(label, _unsupported_syntax(ds)) from None
        except Exception as exc:
            raise ImageDecodeError(
                label, f"cannot decode the DICOM pixels ({_reason(exc)})"
            ) from None
        grey = _to_uint8(np.asarray(pixels))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1 stores bright bone as low values
    return Image.fromarray(grey, mode="L")


COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
"""Photometric interpretations of colour pixels (grey decoding averages them away)."""


def colour_picture(data: bytes, label: str) -> Image.Image | None:
    """The first frame of a colour DICOM as RGB, for the colour check of the
    out-of-distribution flag; None for grey pixels. Called after ``decode_dicom`` has
    accepted the file, so its size and compression are already checked."""
    ds = read_header(data, label, pixels=True)
    if str(ds.get("PhotometricInterpretation", "")).upper() not in COLOUR_PHOTOMETRICS:
        return None
    try:
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames") or 1) > 1:
            pixels = pixels[0]
        if str(ds.PhotometricInterpretation).upper() == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
        rgb = _to_uint8(np.asarray(pixels)[..., :3])
    except Exception as exc:
        raise ImageDecodeError(label, f"cannot decode the DICOM colours ({_reason(exc)})") from None
    return Image.fromarray(rgb, mode="RGB")


def _unsupported_syntax(ds) -> str:
    """Name the compression a DICOM uses when no installed decoder reads it, so the user can
    ask for an uncompressed or JPEG/JPEG-LS/JPEG 2000/RLE export instead of a stack trace."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return (
        f"DICOM pixels compressed as {_syntax_name(ds)} ({printable(str(syntax))}), which cannot "
        "be decoded here; export the study uncompressed or as JPEG, JPEG-LS, JPEG 2000 or RLE"
    )


def _syntax_name(ds) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return printable(getattr(syntax, "name", "") or "unknown")


def probe_dicom(path: Path, label: str) -> ImageInfo:
    """``probe_image`` for a DICOM file: its header, without decoding the pixels."""
    ds = read_header(read_bytes(path, label), label)
    width, height, _, _ = _geometry(ds, label)
    return ImageInfo("DICOM", width, height, str(ds.get("PhotometricInterpretation", "?")))
