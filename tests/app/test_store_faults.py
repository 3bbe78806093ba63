"""The database failing under the app (issue 10): a read-only database gives a plain note
per image and the results stay on screen; nothing raises."""

from __future__ import annotations

import pytest
from app_helpers import xray_bytes

from pneumo.app import logic
from pneumo.storage.db import open_database


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model)


def _classify(predictor, factory):
    return logic.classify_and_store(
        items=[logic.InputItem(f"{i}.png", xray_bytes(i)) for i in range(3)],
        patient_name="Ada Fault",
        predictor=predictor,
        session_factory=factory,
        session_id="fault",
    )


def test_read_only_database_keeps_results_on_screen(predictor, tmp_path):
    db = tmp_path / "ro.db"
    open_database(db)
    factory = open_database(f"sqlite:///file:{db}?mode=ro&uri=true")
    sub = _classify(predictor, factory)
    assert all(r.prediction is not None and r.record_id is None for r in sub.results)
    assert all(r.store_error == "not saved: the database is unavailable" for r in sub.results)
