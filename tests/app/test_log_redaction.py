"""A patient name planted everywhere a user can type one never reaches a log line, even when
the database fails (issue 10, defect 8)."""

from __future__ import annotations

import logging
import time

import pytest
from app_helpers import xray_bytes
from sqlalchemy import text

from pneumo.app import records
from pneumo.app.classify import ImageResult, Submission
from pneumo.app.intake import InputItem, read_patient
from pneumo.storage import repository as repo
from pneumo.storage.db import HideDatabaseDetails, create_db_engine, open_database

NAME = "Zebedee Quixotic"
CODE = "MRN-55501"


@pytest.fixture(scope="module")
def predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model)


def _poison(factory, table: str) -> None:
    with factory() as s:
        s.execute(
            text(
                f"CREATE TRIGGER poison_{table} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        )
        s.commit()


def _planted(caplog) -> list[str]:
    """Log lines (tracebacks included) that carry the planted name or ID; the test client's
    own request log (httpx, client side) is not the server's."""
    formatter = logging.Formatter()
    lines = [formatter.format(r) for r in caplog.records if not r.name.startswith("httpx")]
    return [line for line in lines if "Zebedee" in line or "Quixotic" in line or CODE in line]


@pytest.mark.parametrize("table", ["patients", "records", "audit"])
def test_database_failures_do_not_log_the_patient(predictor, tmp_path, caplog, table):
    factory = open_database(tmp_path / "app.db")
    _poison(factory, table)
    caplog.set_level(logging.DEBUG)
    sub = records.classify_and_store(
        items=[InputItem(f"{NAME}.png", xray_bytes(1))],
        patient=read_patient(NAME, CODE),
        predictor=predictor,
        session_factory=factory,
        session_id="s-redact",
    )
    assert sub.results[0].prediction is not None  # the result stays on screen
    assert "cannot" in caplog.text  # the failure itself is logged...
    assert _planted(caplog) == []  # ...without who it was about


def test_sql_echo_and_error_messages_hide_parameters(tmp_path, caplog):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (name TEXT UNIQUE)"))
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": NAME})
            with pytest.raises(Exception) as info:
                conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": NAME})
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    assert NAME not in str(info.value)
    assert _planted(caplog) == []


def test_filter_hides_database_exception_text():
    from sqlalchemy.exc import IntegrityError

    exc = IntegrityError("INSERT ...", {"name": NAME}, Exception(f"Key (name)=({NAME})"))
    record = logging.LogRecord("pneumo", logging.ERROR, __file__, 1, "cannot %s", ("store",), None)
    record.exc_info = (type(exc), exc, None)
    assert HideDatabaseDetails().filter(record)
    assert record.exc_info is None and NAME not in record.getMessage()
    assert record.getMessage().startswith("cannot store [IntegrityError")


def test_history_search_does_not_log_the_query(tmp_path, caplog):
    factory = open_database(tmp_path / "h.db")
    with factory() as s:
        repo.get_or_create_patient(s, name=NAME, patient_code=CODE)
        s.commit()
    caplog.set_level(logging.DEBUG)
    (found,) = records.patient_history(session_factory=factory, query="Zebedee", session_id="s")
    assert found.name == NAME
    assert _planted(caplog) == []


def test_cli_and_api_logs_do_not_carry_the_name(tmp_path, caplog, tiny_model):
    """A name in a file name or a query string: in the output rows (the user asked for them),
    never in the logs."""
    from fastapi.testclient import TestClient

    from pneumo.api.main import create_app
    from pneumo.api.settings import ApiSettings
    from pneumo.cli import main

    caplog.set_level(logging.DEBUG)
    bad = tmp_path / f"{NAME}.jpeg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    out = tmp_path / "out.csv"
    assert (
        main(["predict", str(bad), "--model", str(tiny_model), "-o", str(out), "--no-progress"])
        == 1
    )
    assert NAME in out.read_text()
    with TestClient(create_app(ApiSettings(model_dir=tiny_model))) as client:
        deadline = time.monotonic() + 120  # the model loads in the background: wait for ready
        while client.get("/v1/ready").status_code != 200:
            assert time.monotonic() < deadline, "the API never became ready"
            time.sleep(0.2)
        r = client.post(
            f"/v1/predict?patient={NAME}",
            files=[("files", (f"{NAME}.jpeg", b"\xff\xd8 junk", "image/jpeg"))],
        )
        assert r.status_code == 422
    assert _planted(caplog) == []


def test_pdf_export_does_not_log_the_characters_of_a_name(caplog):
    from pneumo.app import session_export as report
    from pneumo.inference.predictor import Prediction

    name = "王小明 Zebedee"
    pred = Prediction(
        source="a.png", label="NORMAL", probability=0.1, confidence=0.9, threshold=0.5
    )
    sub = Submission(name, "", [ImageResult("a.png", prediction=pred)], 1.0, "m")
    caplog.set_level(logging.DEBUG)
    assert report.results_pdf([sub], heatmaps=False).startswith(b"%PDF")
    assert "王" not in caplog.text and _planted(caplog) == []
