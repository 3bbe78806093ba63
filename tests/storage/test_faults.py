"""Faults while writing records (issue 10): a writer killed with SIGKILL loses nothing it
committed and leaves a database that opens clean (SQLite in WAL mode)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pneumo.storage import repository as repo
from pneumo.storage.db import open_database

SRC = Path(__file__).resolve().parents[2] / "src"

WRITER = """
import sys
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database
factory = open_database(sys.argv[1])
with factory() as s:
    patient = repo.get_or_create_patient(s, name="Fault Test", patient_code="F1")
    s.commit()
    i = 0
    while True:
        repo.add_record(s, patient=patient, file_name=f"{i}.jpeg", sha256="ab" * 32,
                        prediction="NORMAL", probability=0.1, threshold=0.5,
                        model_version="m", session_id="kill")
        s.commit()
        i += 1
        print(i, flush=True)
"""


def test_sqlite_runs_in_wal_mode(tmp_path):
    factory = open_database(tmp_path / "w.db")
    with factory() as s:
        mode = s.connection().exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_kill_9_during_writes_loses_no_committed_record(tmp_path):
    db = tmp_path / "k.db"
    open_database(db)  # migrated before the writer starts
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.PIPE,
        text=True,
    )
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 200 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the next write
    proc.wait()
    assert committed >= 200
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    factory = open_database(db)  # opens and migrates clean
    with factory() as s:
        rows = repo.session_records(s, session_id="kill")
    assert len(rows) >= committed  # everything it reported as committed is there
    assert [r.file_name for r in rows[:3]] == ["0.jpeg", "1.jpeg", "2.jpeg"]
