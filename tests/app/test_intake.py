"""What the clinician hands in: the patient checked once, uploads and a URL as items refused
one by one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pneumo.app.intake import (
    NothingToClassify,
    PatientEntry,
    read_images,
    read_patient,
    read_uploads,
)
from pneumo.app.settings import AppSettings
from pneumo.storage.repository import PatientInputError


def _uploads(*blobs: bytes) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(name=f"f{i}.png", size=len(d), getvalue=lambda d=d: d)
        for i, d in enumerate(blobs)
    ]


def test_upload_limits_are_per_file():
    settings = AppSettings(max_upload_mb=0.001, max_files=2)
    items = read_uploads(_uploads(b"x" * 100, b"y" * 5000, b"z" * 10), settings)
    assert items[0].data == b"x" * 100
    assert items[1].error.startswith("f1.png: file too large")
    assert "more than 2 files" in items[2].error


def test_uploads_come_first_then_the_url():
    items = read_images(_uploads(b"x"), "http://127.0.0.1/x.png", AppSettings())
    assert [i.data for i in items] == [b"x", None]
    assert items[1].error.startswith("http://127.0.0.1/x.png") and "loopback" in items[1].error


def test_nothing_handed_in_is_refused():
    with pytest.raises(NothingToClassify, match="Add at least one image"):
        read_images([], "  ", AppSettings())


def test_patient_is_trimmed_and_a_name_required():
    assert read_patient("  Ada \t Lovelace ", " 7 ") == PatientEntry("Ada Lovelace", "7")
    with pytest.raises(PatientInputError, match="name is required"):
        read_patient("   ", "7")
