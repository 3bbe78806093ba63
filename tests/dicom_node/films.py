"""DICOM objects for the node's tests, made from the real originals (never saved in the
repository): a MONOCHROME1 film, a 12-bit JPEG-LS film, a CT slice and a colour picture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid as uid
from PIL import Image, ImageOps

SIDE = 512
"""Films are shrunk to this longer side: the network sees 224 pixels anyway, and the
transfers and heatmaps stay fast on a busy machine."""
PATIENT_NAME = "Zyxwv^Quentin"
"""A name that no log line may contain."""


def grey_film(path: Path) -> np.ndarray:
    grey = ImageOps.autocontrast(Image.open(path).convert("L"))
    grey.thumbnail((SIDE, SIDE))
    return np.asarray(grey)


def dataset(
    pixels: np.ndarray,
    *,
    study: str,
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1",
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    **tags,
) -> pydicom.Dataset:
    """A complete image data set holding ``pixels`` in ``study`` of the test patient."""
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID = PATIENT_NAME, "PID-4711"
    ds.PatientBirthDate, ds.PatientSex = "20180101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid.generate_uid()
    ds.AccessionNumber, ds.StudyID = "ACC-0815", "1"
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20240102", "101500", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape[:2]
    rgb = photometric == "RGB"
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        bits,
        8 if bits == 8 else 12,
        7 if bits == 8 else 11,
    )
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def encoded(ds: pydicom.Dataset, syntax=None, **options) -> bytes:
    if syntax is not None:
        ds.compress(syntax, **options)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_objects(normal: Path, pneumonia: Path) -> dict[str, bytes]:
    """name -> DICOM file bytes: two chest films (MONOCHROME1; 12-bit JPEG-LS with a rescale),
    a CT slice and a colour picture, each in a study of its own."""
    a, b = grey_film(normal), grey_film(pneumonia)
    stored = b.astype(np.uint16) * 15 + 100  # 12-bit with an offset, as detectors write
    colour = np.stack([a, np.roll(a, 40, axis=1) // 3, 255 - a], axis=-1).astype(np.uint8)
    return {
        "mono1": encoded(
            dataset(255 - a, study=uid.generate_uid(), photometric="MONOCHROME1", ViewPosition="PA")
        ),
        "jpegls": encoded(
            dataset(
                stored,
                study=uid.generate_uid(),
                modality="DX",
                sop_class="1.2.840.10008.5.1.4.1.1.1.1",
                RescaleSlope=1,
                RescaleIntercept=-100,
                BodyPartExamined="CHEST",
            ),
            uid.JPEGLSLossless,
        ),
        "ct": encoded(
            dataset(
                a, study=uid.generate_uid(), sop_class="1.2.840.10008.5.1.4.1.1.2", modality="CT"
            )
        ),
        "colour": encoded(
            dataset(colour, study=uid.generate_uid(), modality="CR", photometric="RGB")
        ),
    }
