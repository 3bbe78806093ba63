"""Classify-and-store without the page: storage failures, URL input, exports, logs."""

from __future__ import annotations

import csv
import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from app_helpers import xray_bytes
from sqlalchemy import text

from pneumo.app import records
from pneumo.app import session_export as report
from pneumo.app.fetch import FetchPolicy
from pneumo.app.intake import InputItem, read_patient, read_url
from pneumo.app.settings import AppSettings
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database


@pytest.fixture
def factory(db_url):
    """A fresh records database: each test that stores runs on SQLite and on PostgreSQL."""
    return open_database(db_url)


POISON_TRIGGER = {  # a real database error for exactly one row, in each engine's own SQL
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON records "
        "WHEN NEW.file_name = 'poison.png' BEGIN SELECT RAISE(ABORT, 'boom'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.file_name = 'poison.png' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}


def _items(*names):
    return [InputItem(n, xray_bytes(i)) for i, n in enumerate(names)]


def test_a_failing_row_never_drops_the_others(predictor, factory):
    with factory() as s:
        for statement in POISON_TRIGGER[s.get_bind().dialect.name]:
            s.execute(text(statement))
        s.commit()
    sub = records.classify_and_store(
        items=_items("a.png", "poison.png", "c.png"),
        patient=read_patient("Ada"),
        predictor=predictor,
        session_factory=factory,
        session_id="s1",
    )
    assert [r.record_id is not None for r in sub.results] == [True, False, True]
    assert sub.results[1].store_error == "not saved: database error"
    assert sub.results[1].prediction is not None  # still shown to the user
    with factory() as s:
        assert [r.file_name for r in repo.session_records(s, session_id="s1")] == ["a.png", "c.png"]
        (event,) = repo.audit_events(s)
        assert event.detail == "2 stored, 0 failed"


def test_a_submission_that_stores_nothing_leaves_no_patient(predictor, factory):
    """Two refused URLs (issue 18): the history listed the patient with 0 records."""
    for url in ("http://127.0.0.1/a.png", "ftp://example.org/b.png"):
        sub = records.classify_and_store(
            items=[read_url(url, AppSettings())],
            patient=read_patient("Grace Refused"),
            predictor=predictor,
            session_factory=factory,
            session_id="s-refused",
        )
        assert sub.results[0].error and sub.results[0].record_id is None
    found = records.patient_history(session_factory=factory, query="grace", session_id="h")
    assert found == []
    with factory() as s:
        assert [e.detail for e in repo.audit_events(s)] == ["0 stored, 1 failed"] * 2


def test_image_from_a_url_is_classified_and_stored(predictor, factory):
    body = xray_bytes(7)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/films/chest.png"
        item = read_url(url, AppSettings(), policy=FetchPolicy(allow_loopback=True))
        refused = read_url(url, AppSettings())  # the app's own policy: refused
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert item.name == "chest.png" and item.data == body
    assert refused.data is None and "loopback" in refused.error
    sub = records.classify_and_store(
        items=[item],
        patient=read_patient("Ada"),
        predictor=predictor,
        session_factory=factory,
        session_id="s2",
    )
    assert sub.results[0].record_id is not None
    import hashlib

    assert sub.results[0].sha256 == hashlib.sha256(body).hexdigest()


def test_app_sessions_storing_at_once_lose_nothing(predictor, factory):
    """Several browser sessions of one app server (threads sharing its session factory) store
    images for the same new patient at the same moment: every image is saved, once, under one
    patient, and each session's audit row counts its own."""
    sessions, per_session = 6, 3
    barrier = threading.Barrier(sessions)
    submissions = [None] * sessions

    def session(k):
        barrier.wait()
        submissions[k] = records.classify_and_store(
            items=_items(*[f"s{k}-{i}.png" for i in range(per_session)]),
            patient=read_patient("Grace Hopper", "G-1"),
            predictor=predictor,
            session_factory=factory,
            session_id=f"session-{k}",
        )

    threads = [threading.Thread(target=session, args=(k,)) for k in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.record_id is not None and r.store_error is None
               for sub in submissions for r in sub.results)  # fmt: skip
    with factory() as s:
        (patient,) = repo.find_patients(s, query="grace")
        names = sorted(r.file_name for r in repo.patient_records(s, patient_id=patient.id))
        assert names == sorted(f"s{k}-{i}.png" for k in range(sessions) for i in range(per_session))
        details = [e.detail for e in repo.audit_events(s, patient_id=patient.id)]
    assert details == [f"{per_session} stored, 0 failed"] * sessions


def test_patient_name_is_never_logged(predictor, factory, cam, caplog):
    caplog.set_level(logging.DEBUG)
    records.classify_and_store(
        items=_items("a.png") + [InputItem("b.png", b"junk")],
        patient=read_patient("Zebedee Quixotic", "ID-991"),
        predictor=predictor,
        session_factory=factory,
        session_id="s3",
        cam=cam,
    )
    records.patient_history(session_factory=factory, query="Zebedee", session_id="s3")
    assert caplog.records  # something was logged...
    assert "Zebedee" not in caplog.text and "ID-991" not in caplog.text  # ...but not who


@pytest.fixture
def submission(predictor, factory, cam):
    items = _items("=cmd.png", "b.png") + [InputItem("bad.jpeg", b"not an image")]
    return records.classify_and_store(
        items=items,
        patient=read_patient("Zoë Łukasiewicz 王", "7"),
        predictor=predictor,
        session_factory=factory,
        session_id="s4",
        cam=cam,
    )


def test_csv_export(submission):
    rows = list(csv.DictReader(io.StringIO(report.results_csv([submission]).decode("utf-8-sig"))))
    assert [r["file"] for r in rows] == ["'=cmd.png", "b.png", "bad.jpeg"]  # formula defused
    assert rows[0]["patient_name"] == "Zoë Łukasiewicz 王" and rows[0]["patient_id"] == "7"
    p = submission.results[1].prediction
    assert float(rows[1]["p_pneumonia"]) == pytest.approx(p.probability, abs=1e-4)
    assert float(rows[1]["p_normal"]) == pytest.approx(1 - p.probability, abs=1e-4)
    assert rows[1]["result"] in ("Normal", "Pneumonia") and len(rows[1]["sha256"]) == 64
    assert rows[2]["result"] == "error" and "not an image" in rows[2]["error"]
    assert rows[1]["record_id"] and not rows[2]["record_id"]


def test_pdf_export_has_images_and_heatmaps(submission):
    with_maps = report.results_pdf([submission], heatmaps=True)
    without = report.results_pdf([submission], heatmaps=False)
    assert with_maps.startswith(b"%PDF") and without.startswith(b"%PDF")
    assert with_maps.count(b"/Subtype /Image") == 4  # two X-rays, two heatmaps
    assert without.count(b"/Subtype /Image") == 2
    from pypdf import PdfReader

    text_content = "".join(p.extract_text() for p in PdfReader(io.BytesIO(with_maps)).pages)
    assert "Łukasiewicz" in text_content and "Research use only" in text_content
    assert "bad.jpeg" in text_content and "Kermany" in text_content
