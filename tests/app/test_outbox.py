"""Results made while the database is down (issue 19 item 1): journaled in the app's outbox,
shown as pending (on the page too), and stored exactly once when the database is back, even
when a delivery crashes between storing and acknowledging."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from app_helpers import PAGE, xray_bytes
from sqlalchemy import func, select

from pneumo.app import records
from pneumo.app.intake import InputItem, read_patient
from pneumo.app.outbox import Outbox
from pneumo.storage.db import open_database
from pneumo.storage.tables import AuditEvent, Record

NAME = "Ada Outboxson"


def _classify(predictor, factory, outbox, session_id):
    return records.classify_and_store(
        items=[InputItem(f"{i}.png", xray_bytes(i)) for i in range(3)],
        patient=read_patient(NAME),
        predictor=predictor,
        session_factory=factory,
        session_id=session_id,
        outbox=outbox,
    )


def _counts(factory, session_id) -> tuple[int, int]:
    """Records and classify audit rows of one app session."""
    with factory() as s:
        n_records = s.scalar(select(func.count()).where(Record.session_id == session_id))
        n_audit = s.scalar(
            select(func.count()).where(
                AuditEvent.session_id == session_id, AuditEvent.action == "classify"
            )
        )
    return n_records, n_audit


def test_results_made_while_postgres_is_down_are_saved_once_it_is_back(
    predictor, postgres_server, tmp_path, caplog
):
    factory = open_database(postgres_server.create_database())
    outbox = Outbox(tmp_path / "outbox")
    caplog.set_level(logging.INFO)
    postgres_server.stop()
    try:
        sub = _classify(predictor, factory, outbox, "down")
        assert all(r.prediction is not None for r in sub.results)  # shown all the same
        assert all(r.record_id is None and r.store_error == records.PENDING for r in sub.results)
        assert outbox.pending_results() == 3
        assert records.deliver_pending(outbox=outbox, session_factory=factory) == 1  # still down
    finally:
        postgres_server.start()
    mode = stat.S_IMODE(os.stat(outbox.path).st_mode)
    assert mode == 0o600 and NAME in outbox.path.read_text()  # kept, readable by the app only
    assert NAME not in caplog.text

    assert records.deliver_pending(outbox=outbox, session_factory=factory) == 0
    assert _counts(factory, "down") == (3, 1)
    assert outbox.pending_results() == 0
    records.apply_outcome(sub.results, outbox.outcome(sub.outbox_key))  # the page's next run
    assert all(r.record_id is not None and r.store_error is None for r in sub.results)
    with factory() as s:
        (event,) = s.scalars(select(AuditEvent).where(AuditEvent.session_id == "down"))
        assert event.detail == "3 stored, 0 failed" and event.patient_id is not None

    assert records.deliver_pending(outbox=outbox, session_factory=factory) == 0
    assert _counts(factory, "down") == (3, 1)  # nothing delivered twice


CRASH_AFTER_STORING = textwrap.dedent(
    """
    import os, sys
    from pneumo.app import records
    from pneumo.app.outbox import Outbox
    from pneumo.storage.db import open_database

    Outbox.acknowledge = lambda self, key, outcome: os._exit(17)  # dies before the ack line
    outbox = Outbox(sys.argv[1])
    records.deliver_pending(outbox=outbox, session_factory=open_database(sys.argv[2]))
    """
)


def test_a_delivery_that_crashes_before_its_acknowledgement_stores_nothing_twice(
    predictor, db_url, tmp_path
):
    factory = open_database(db_url)
    outbox = Outbox(tmp_path / "outbox")
    outbox.add("0" * 32, _entry_from_a_down_database(predictor, tmp_path))
    env = {**os.environ, "PYTHONPATH": str(Path(records.__file__).parents[2])}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_STORING, str(outbox.folder), db_url],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == 17, crashed.stderr.decode()[-2000:]
    assert _counts(factory, "crash") == (3, 1)  # stored, but the journal does not know
    assert outbox.pending_results() == 3

    assert records.deliver_pending(outbox=outbox, session_factory=factory) == 0
    assert _counts(factory, "crash") == (3, 1)
    outcome = outbox.outcome("0" * 32)
    with factory() as s:
        ids = sorted(s.scalars(select(Record.id).where(Record.session_id == "crash")))
    assert sorted(outcome["records"].values()) == ids  # the page gets the rows stored first


def _entry_from_a_down_database(predictor, tmp_path) -> dict:
    """A real journaled submission: classified while the (SQLite) database was read-only."""
    db = tmp_path / "ro.db"
    open_database(db)
    read_only = open_database(f"sqlite:///file:{db}?mode=ro&uri=true")
    journal = Outbox(tmp_path / "first")
    sub = _classify(predictor, read_only, journal, "crash")
    assert all(r.store_error == records.PENDING for r in sub.results)
    ((_, entry),) = journal.pending()
    return entry


def _page_classify(at, files):
    next(t for t in at.text_input if t.label == "Patient name").input(NAME)
    at.file_uploader[0].set_value(files)
    next(b for b in at.button if b.label == "Classify").click().run()
    assert not at.exception, at.exception


def _waiting_notes(at) -> list[str]:
    return [i.value for i in at.info if "waiting to be saved" in i.value]


@pytest.mark.slow
def test_the_page_says_what_waits_while_postgres_is_down_and_clears_once_it_is_saved(
    app_env, postgres_server, monkeypatch
):
    """What the clinician sees: saved, then "not saved yet" with the count of results waiting
    while PostgreSQL is stopped mid-session, then, once it is back and the outbox delivered,
    the record numbers and no note."""
    from streamlit.testing.v1 import AppTest

    db = postgres_server.create_database()
    monkeypatch.setenv("PNEUMO_DB", db)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    _page_classify(at, [("first.png", xray_bytes(1), "image/png")])
    assert any("Saved as record" in c.value for c in at.caption)
    assert not _waiting_notes(at)

    postgres_server.stop()
    try:
        two = [
            ("second.png", xray_bytes(2), "image/png"),
            ("third.png", xray_bytes(3), "image/png"),
        ]
        _page_classify(at, two)
        assert _waiting_notes(at) == [
            "2 results waiting to be saved; they will be saved when the database is back "
            "(kept on this server until then)."
        ]
        assert [e.value for e in at.error].count(records.PENDING) == 2
        assert sum("Saved as record" in c.value for c in at.caption) == 1  # the first only
    finally:
        postgres_server.start()

    outbox = Outbox(os.environ["PNEUMO_OUTBOX"])
    deadline = time.monotonic() + 90  # the page's courier retries with back-off from 2 s
    while outbox.pending_results() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert outbox.pending_results() == 0
    at.run()  # the clinician's next click
    assert not at.exception, at.exception
    assert not _waiting_notes(at)
    assert records.PENDING not in [e.value for e in at.error]
    assert sum("Saved as record" in c.value for c in at.caption) == 3
    with open_database(db)() as s:
        assert s.scalar(select(func.count()).select_from(Record)) == 3
