"""A bad DICOM gives pneumo's one line, not pydicom's ERROR lines and tracebacks (issue 18,
item 13); pydicom's notes are still there under ``-v``, as DEBUG lines."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import warnings

import pytest

from corpus import dicom
from pneumo.data.decode import load_grey
from pneumo.errors import ImageDecodeError
from synthetic import build_tiny_model

# a JPEG frame every installed decoder gives up on: pydicom logs each failure with a traceback
BROKEN = dicom(syntax="JPEGBaseline8Bit", jpeg_frame=b"\xff\xd8\xff\xe0" + bytes(300))
# an unknown character set: pydicom copes, after a WARNING line and a UserWarning
with warnings.catch_warnings():  # pydicom warns when writing it too
    warnings.simplefilter("ignore")
    ODD_CHARSET = dicom(extra=lambda ds: setattr(ds, "SpecificCharacterSet", "NO_SUCH_CHARSET"))
CORRUPT = (
    "broken.dcm: corrupt DICOM pixel data (no JPEG Baseline (Process 1) decoder could read it)"
)


def _pydicom_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] == "pydicom"]


def test_pydicom_logs_nothing_and_warns_nothing_at_the_default_level(caplog):
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # what a user's -W default or a test runner shows
        with pytest.raises(ImageDecodeError) as info:
            load_grey(BROKEN, name="broken.dcm")
        assert load_grey(ODD_CHARSET, name="odd.dcm").size == (96, 96)
    assert str(info.value) == CORRUPT
    assert _pydicom_records(caplog) == []
    assert [str(w.message) for w in seen] == []


def test_pydicom_notes_are_debug_lines_when_pneumo_logs_debug(caplog):
    caplog.set_level(logging.DEBUG)
    load_grey(ODD_CHARSET, name="odd.dcm")
    with pytest.raises(ImageDecodeError):
        load_grey(BROKEN, name="broken.dcm")
    notes = _pydicom_records(caplog)
    assert any("NO_SUCH_CHARSET" in r.getMessage() for r in notes)
    assert any(r.exc_info for r in notes)  # the decoders' tracebacks, for a bug report
    assert {r.levelname for r in notes} == {"DEBUG"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def test_pneumo_predict_stderr_has_no_pydicom_lines(tiny_model, tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    (films / "broken.dcm").write_bytes(BROKEN)
    (films / "odd-charset.dcm").write_bytes(ODD_CHARSET)
    out = tmp_path / "rows.csv"
    command = [sys.executable, "-m", "pneumo", "predict", str(films), "-o", str(out)]
    command += ["--model", str(tiny_model), "--backend", "torch", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for noise in ("pydicom", "Traceback", "Warning", "ERROR"):
        assert noise not in done.stderr, done.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert rows["broken.dcm"]["error"].endswith(CORRUPT)
    assert rows["odd-charset.dcm"]["error"] == "" and rows["odd-charset.dcm"]["ood"]
