"""The database failing under the app (issue 10): a read-only database gives a plain note
per image and the results stay on screen; nothing raises."""

from __future__ import annotations

import pytest
from app_helpers import xray_bytes

from pneumo.app import records
from pneumo.app.intake import InputItem, read_patient
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model)


def _classify(predictor, factory):
    return records.classify_and_store(
        items=[InputItem(f"{i}.png", xray_bytes(i)) for i in range(3)],
        patient=read_patient("Ada Fault"),
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


def test_history_on_a_broken_database_is_a_message(tmp_path, caplog):
    db = tmp_path / "h.db"
    factory = open_database(db)
    with factory() as s:
        repo.get_or_create_patient(s, name="Ada Broken")
        s.commit()
        s.connection().exec_driver_sql("DROP TABLE records")
        s.commit()
    with pytest.raises(records.HistoryUnavailable, match="history is unavailable"):
        records.patient_history(session_factory=factory, query="Ada", session_id="h")
    assert "OperationalError" in caplog.text and "Ada" not in caplog.text


def test_export_audit_failure_does_not_stop_the_export(predictor, tmp_path):
    factory = open_database(tmp_path / "e.db")
    sub = _classify(predictor, factory)
    with factory() as s:
        s.connection().exec_driver_sql("DROP TABLE audit")
        s.commit()
    records.audit_export(
        session_factory=factory, results=sub.results, session_id="e", user="", kind="csv"
    )  # logged, not raised
