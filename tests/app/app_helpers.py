"""Generated inputs for the app tests (imported by name: tests/app is on sys.path)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import pneumo.app

PAGE = str(Path(pneumo.app.__file__).with_name("main.py"))


def xray_bytes(seed: int = 0, size: int = 96, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.05) + rng.normal(0, 12, (size, size))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(buf, format=fmt)
    return buf.getvalue()


def colour_photo_bytes() -> bytes:
    """A very colourful picture: no chest X-ray looks like this."""
    rng = np.random.default_rng(1)
    arr = np.zeros((96, 96, 3), np.uint8)
    arr[..., 0] = 230
    arr[..., 1] = rng.integers(0, 80, (96, 96))
    arr[48:, :, 2] = 220
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 10_000, height: int = 8_000) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (decompression bomb)."""
    raw = xray_bytes(size=32)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return raw[:8] + patched + raw[8 + 25 :]


def dicom_bytes(size: int = 96, photometric: str = "MONOCHROME2") -> bytes:
    """A 16-bit DICOM Part 10 file holding a generated X-ray."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    grey = np.asarray(Image.open(io.BytesIO(xray_bytes(3, size))), dtype=np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = grey.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
