"""Classify-and-store fed the generated corpus of bad and odd files as uploads (issue 10): every
upload gets a result or a reason, good ones are stored, nothing raises."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from corpus import CASES, write_case
from pneumo.app import records
from pneumo.app.intake import read_patient, read_uploads
from pneumo.app.settings import AppSettings
from pneumo.storage.db import open_database

UPLOADABLE = [c for c in CASES if not c.special]


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model)


def _uploads() -> list[SimpleNamespace]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(UPLOADABLE):
            data = write_case(case, Path(tmp) / f"c{i}").read_bytes()
            out.append(
                SimpleNamespace(name=case.filename, size=len(data), getvalue=lambda d=data: d)
            )
    return out


def test_whole_corpus_as_uploads(predictor, tmp_path):
    settings = AppSettings(max_files=len(UPLOADABLE))
    items = read_uploads(_uploads(), settings)
    sub = records.classify_and_store(
        items=items,
        patient=read_patient("Ada Test"),
        predictor=predictor,
        session_factory=open_database(tmp_path / "app.db"),
        session_id="corpus",
        settings=settings,
    )
    assert len(sub.results) == len(UPLOADABLE)
    for case, res in zip(UPLOADABLE, sub.results, strict=True):
        if case.expect == "error":
            assert res.error and res.prediction is None, case.kind
        elif case.expect in ("ok", "ood"):
            assert res.error is None and res.prediction is not None, (case.kind, res.error)
            assert res.record_id is not None and res.thumbnail, case.kind
            if case.expect == "ood":
                assert res.prediction.ood and not res.diagnosed, case.kind
        else:
            assert (res.error is None) == (res.prediction is not None), case.kind
