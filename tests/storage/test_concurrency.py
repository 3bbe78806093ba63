"""Several app servers writing to one database at once (issue 12): processes that start together
(and so migrate a fresh database together), each with threads sharing one session factory as
Streamlit sessions do, all adding records for the same new patients. Nothing may be lost or
doubled, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pneumo.storage import repository as repo
from pneumo.storage.db import open_database

SRC = Path(__file__).resolve().parents[2] / "src"
PROCESSES, THREADS, RECORDS, PATIENTS = 3, 4, 12, 3

APP_SERVER = """
import sys, threading, time
import alembic.command  # imported before the start, so that the servers migrate together
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database

url, server, start_at, threads, records, patients = sys.argv[1:]
time.sleep(max(0.0, float(start_at) - time.time()))  # every server starts at the same moment
factory = open_database(url)
barrier = threading.Barrier(int(threads))
failures = []

def app_session(t):
    barrier.wait()
    try:
        with factory() as s:
            for i in range(int(records)):
                patient = repo.get_or_create_patient(
                    s, name=f"Patient {i % int(patients)}", patient_code="C-1"
                )
                s.commit()
                repo.add_record(s, patient=patient, file_name=f"{server}-{t}-{i}.png",
                                sha256="ab" * 32, prediction="NORMAL", probability=0.1,
                                threshold=0.5, model_version="m", session_id=f"{server}-{t}")
                s.commit()
    except Exception as exc:
        failures.append(repr(exc))

workers = [threading.Thread(target=app_session, args=(t,)) for t in range(int(threads))]
for w in workers:
    w.start()
for w in workers:
    w.join()
if failures:
    sys.exit("\\n".join(failures))
"""


def test_concurrent_app_servers_lose_no_record(db_url, tmp_path):
    start_at = time.time() + 3.0  # after every interpreter has started and imported SQLAlchemy
    args = [db_url, "", str(start_at), str(THREADS), str(RECORDS), str(PATIENTS)]
    servers = []
    for k in range(PROCESSES):
        args[1] = f"s{k}"
        servers.append(
            subprocess.Popen(
                [sys.executable, "-c", APP_SERVER, *args],
                env=dict(os.environ, PYTHONPATH=str(SRC)),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    failures = [(p.wait(timeout=180), p.stderr.read()) for p in servers]
    assert all(code == 0 for code, _ in failures), failures

    factory = open_database(db_url)
    with factory() as s:
        patients = repo.find_patients(s, query="patient")
        assert sorted(p.name for p in patients) == [f"Patient {i}" for i in range(PATIENTS)]
        stored = Counter(
            r.file_name for p in patients for r in repo.patient_records(s, patient_id=p.id)
        )
    expected = {
        f"s{k}-{t}-{i}.png"
        for k in range(PROCESSES)
        for t in range(THREADS)
        for i in range(RECORDS)
    }
    assert set(stored) == expected  # every record there...
    assert set(stored.values()) == {1}  # ...exactly once
