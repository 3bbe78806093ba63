"""DICOM pixels checked value by value: a wrong inversion, a skipped rescale or window, the
wrong frame or a lossy decoder would show as a different picture, which the model would
classify differently from the same film saved as PNG."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import pydicom
import pydicom.uid as uid
import pytest
from PIL import Image, ImageOps

from corpus import cr_dataset
from pneumo.data.decode import load_grey
from pneumo.errors import ImageDecodeError

RAMP_8 = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once
RAMP_12 = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # every 12-bit value once


def _dataset(array: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> pydicom.Dataset:
    """A CR image data set holding ``array`` (frames first for 3-D grey, samples last for RGB)."""
    ds = cr_dataset()
    rgb = photometric == "RGB"
    frames = array.shape[0] if array.ndim == 3 and not rgb else 1
    ds.Rows, ds.Columns = array.shape[-3:-1] if rgb else array.shape[-2:]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = 8 if array.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        bits,
        8 if bits == 8 else 12,
        7 if bits == 8 else 11,
    )
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(array).tobytes()
    return ds


def _bytes(ds: pydicom.Dataset, syntax=None, **compress) -> bytes:
    if syntax is not None:
        ds.compress(syntax, **compress)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _grey(data: bytes) -> np.ndarray:
    return np.asarray(load_grey(data, name="film.dcm"), dtype=np.int32)


def test_monochrome1_is_inverted_pixel_for_pixel():
    """In MONOCHROME1 the lowest value is white: bone must come out bright, as in MONOCHROME2."""
    mono2 = _grey(_bytes(_dataset(RAMP_8)))
    mono1 = _grey(_bytes(_dataset(RAMP_8, "MONOCHROME1")))
    assert np.array_equal(mono2, RAMP_8)
    assert np.array_equal(mono1, 255 - RAMP_8.astype(np.int32))


def test_voi_window_is_applied():
    """A window [1024, 3072] on 12-bit data: below it black, above it white, its centre mid-grey.
    A plain stretch over the data range would give 64, 128 and 191 at 1024, 2048 and 3072."""
    out = _grey(_bytes(_dataset(RAMP_12, WindowCenter=2048, WindowWidth=2048))).ravel()
    assert (out[:1024] == 0).all()
    assert (out[3073:] == 255).all()
    assert abs(out[2048] - 128) <= 1
    assert np.all(np.diff(out[1024:3073]) >= 0)


def test_rescale_is_applied_before_the_window():
    """The window is in rescaled units (e.g. with intercept -1024): centre 0 means stored 1024.
    Skipping the rescale would put stored 1024 at the top of the window, white."""
    ds = _dataset(RAMP_12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=2048)
    out = _grey(_bytes(ds)).ravel()
    assert abs(out[1024] - 128) <= 1
    assert (out[:1] == 0).all() and (out[2049:] == 255).all()


def test_negative_rescale_slope_turns_the_picture_over():
    ds = _dataset(RAMP_8.astype(np.uint16) * 16, RescaleSlope=-1, RescaleIntercept=4095)
    out = _grey(_bytes(ds))
    assert np.array_equal(out, 255 - RAMP_8.astype(np.int32))


def test_multiframe_file_gives_its_first_frame():
    frames = np.stack([RAMP_8, np.full_like(RAMP_8, 200), 255 - RAMP_8])
    assert np.array_equal(_grey(_bytes(_dataset(frames))), RAMP_8)


def test_rgb_dicom_becomes_the_same_grey():
    rgb = np.repeat(RAMP_8[..., None], 3, axis=-1)
    assert np.array_equal(_grey(_bytes(_dataset(rgb, "RGB"))), RAMP_8)


LOSSLESS = [
    ("implicit-vr", uid.ImplicitVRLittleEndian, {}),
    ("deflated", uid.DeflatedExplicitVRLittleEndian, {}),
    ("rle", uid.RLELossless, {"encoding_plugin": "pydicom"}),
    ("jpeg-ls", uid.JPEGLSLossless, {}),
    ("jpeg-2000", uid.JPEG2000Lossless, {}),
]


@pytest.mark.parametrize(("name", "syntax", "options"), LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_lossless_transfer_syntaxes_decode_exactly(name, syntax, options):
    """PACS exports often compress; a lossless syntax must give back the very same values."""
    if not syntax.is_compressed:
        ds = _dataset(RAMP_12)
        ds.file_meta.TransferSyntaxUID = syntax
        data = _bytes(ds)
    else:
        data = _bytes(_dataset(RAMP_12), syntax, **options)
    expected = np.round(RAMP_12.astype(np.float64) * 255 / 4095).astype(np.int32)
    assert np.abs(_grey(data) - expected).max() <= 1


def test_jpeg_ls_near_lossless_stays_within_its_error_bound():
    data = _bytes(_dataset(RAMP_12), uid.JPEGLSNearLossless, jls_error=8)
    expected = RAMP_12.astype(np.float64) * 255 / 4095
    assert np.abs(_grey(data) - expected).max() <= 2  # 8 of 4095 is under one grey level


def test_a_compression_nothing_here_decodes_is_named_in_the_error():
    from pydicom.encaps import encapsulate

    ds = _dataset(RAMP_8)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML
    with pytest.raises(ImageDecodeError) as info:
        load_grey(_bytes(ds), name="video.dcm")
    message = str(info.value)
    assert message.startswith("video.dcm: DICOM pixels compressed as MPEG2")
    assert "1.2.840.10008.1.2.4.100" in message and "cannot be decoded here" in message


@pytest.mark.realdata
@pytest.mark.slow
def test_dicom_films_through_pneumo_predict_match_the_same_films_as_png(originals_dir, tmp_path):
    """Real X-rays stored as DICOM (MONOCHROME1 8-bit, 12-bit JPEG-LS with a rescale) get the
    very probabilities of the same pixels saved as PNG, from the CLI with the bundled model."""
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    films = sorted(originals_dir.rglob("*.jpeg"))[:3]
    for i, film in enumerate(films):
        grey = ImageOps.autocontrast(Image.open(film).convert("L"))  # uses 0..255 fully
        grey.thumbnail((512, 512))
        grey.save(tmp_path / f"film{i}.png")
        a = np.asarray(grey)
        (tmp_path / f"film{i}-mono1.dcm").write_bytes(_bytes(_dataset(255 - a, "MONOCHROME1")))
        stored = a.astype(np.uint16) * 15 + 100  # 12-bit values with an offset, as detectors write
        ds = _dataset(stored, RescaleSlope=1, RescaleIntercept=-100)
        (tmp_path / f"film{i}-jls.dcm").write_bytes(_bytes(ds, uid.JPEGLSLossless))
    out = tmp_path / "rows.csv"
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "predict", str(tmp_path), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 9 and not any(r["error"] for r in rows.values())
    for i in range(len(films)):
        png = rows[f"film{i}.png"]
        for kind in ("mono1", "jls"):
            dcm = rows[f"film{i}-{kind}.dcm"]
            assert dcm["class"] == png["class"]
            assert abs(float(dcm["probability"]) - float(png["probability"])) < 1e-4, kind
