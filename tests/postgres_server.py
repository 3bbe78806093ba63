"""A throw-away PostgreSQL server for the tests: initdb in a temp folder, listening on loopback
only, stopped at the end of the session. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_DIRS = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
"""Debian keeps the server binaries off PATH, one folder per major version (newest first)."""


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: $PNEUMO_PG_BIN, PATH, then Debian's."""
    if os.environ.get("PNEUMO_PG_BIN"):
        return Path(os.environ["PNEUMO_PG_BIN"])
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    return next((d for d in PG_BIN_DIRS if (d / "initdb").is_file()), None)


def free_port() -> int:
    """A free TCP port on loopback (for the servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; ``url(db)`` is a SQLAlchemy URL for one of its databases."""

    port: int
    user: str
    pg_ctl: list[str] = field(default_factory=list)
    """``pg_ctl -D <data>`` (as the server's user), for ``stop`` and ``start``."""
    start_args: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server at once (as a crash or an operator would): clients get refused."""
        subprocess.run(
            [*self.pg_ctl, "-m", "immediate", "-w", "stop"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Start it again on the same port and data (after ``stop``)."""
        subprocess.run(
            [*self.pg_ctl, *self.start_args, "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (one per test keeps tests independent); returns its URL."""
        from sqlalchemy import create_engine, text

        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


@contextlib.contextmanager
def running_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a fresh cluster (trust authentication, loopback only) and stop it afterwards."""
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else os.environ.get("USER") or "pneumo"
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="pneumo-pg-"))
    data = root / "data"
    if as_root:
        shutil.chown(root, "postgres")
    port = free_port()
    log = root / "server.log"

    def run(*args: str) -> None:
        subprocess.run(prefix + list(args), check=True, capture_output=True, timeout=120)

    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust"]
        run(*initdb, "-E", "UTF8", "--no-locale")  # no dependence on the machine's locales
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        stop = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        watchdog = _stop_when_gone(os.getpid(), stop, root)
        pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data)]
        try:
            yield PostgresServer(port, user, pg_ctl, ["-l", str(log), "-o", options])
        finally:
            watchdog.kill()
            watchdog.wait()
            subprocess.run(stop, capture_output=True, timeout=120)  # may be stopped already
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stop_when_gone(pid: int, stop: list[str], root: Path) -> subprocess.Popen:
    """A shell that stops the server and removes its folder once ``pid`` has exited: a test run
    killed outright (SIGKILL, a crash) must not leave a PostgreSQL server behind."""
    script = f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; {shlex.join(stop)}; "
    script += f"rm -rf {shlex.quote(str(root))}"
    return subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives a kill of the test run's process group
    )
