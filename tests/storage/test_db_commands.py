"""`pneumo db migrate` and `pneumo db check` (the app's readiness check), and `pneumo app`
migrating before it starts (issue 19): a database that is down stops the launcher with the
reason instead of a server whose health check says ok while every page fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from pneumo.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _down_url() -> str:
    """A PostgreSQL server that is not running: nothing listens on the port."""
    return f"postgresql+psycopg://pneumo:secret-pw@127.0.0.1:{_closed_port()}/records"


def test_check_fails_until_migrate_brings_the_schema(db_url, capsys):
    assert main(["db", "check", "--db", db_url]) == 2
    assert "run `pneumo db migrate --db" in capsys.readouterr().err
    assert main(["db", "migrate", "--db", db_url]) == 0
    assert main(["db", "migrate", "--db", db_url]) == 0  # again: nothing to do
    capsys.readouterr()
    assert main(["db", "check", "--db", db_url]) == 0
    assert capsys.readouterr().out.startswith("ready: database at revision")


def test_check_of_a_database_that_is_down_names_it_without_the_password(capsys):
    assert main(["db", "check", "--db", _down_url()]) == 2
    err = capsys.readouterr().err
    assert "cannot reach database postgresql+psycopg://pneumo:***@127.0.0.1" in err
    assert "secret-pw" not in err


def test_pneumo_app_does_not_start_while_the_database_is_down():
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "app", "--db", _down_url()],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "cannot migrate database postgresql+psycopg://pneumo:***@" in line
    assert "the app was not started" in line and "pneumo db migrate --db" in line
    assert "http://" not in done.stderr and "secret-pw" not in done.stderr
