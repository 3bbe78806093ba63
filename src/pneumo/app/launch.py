"""Start the Streamlit page as a local server (what `pneumo app` and `make app` run)."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pneumo import limits
from pneumo.errors import PneumoError
from pneumo.extras import require
from pneumo.inference.engine import DEFAULT_BACKEND

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().with_name("main.py")
DEFAULT_HOST = "localhost"
"""Where the server listens unless --host says otherwise: this machine only."""


def streamlit_command(port: int, max_upload_mb: float, host: str = DEFAULT_HOST) -> list[str]:
    """The command line of the server process: Streamlit on ``host``, headless, no usage
    statistics, run by ``pneumo.app.server`` (which stops with its launcher)."""
    return [
        sys.executable,
        "-m",
        "pneumo.app.server",
        "run",
        str(PAGE),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        str(max(1, int(max_upload_mb + 0.999))),
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]


def run_app(
    *,
    port: int = 8501,
    host: str = DEFAULT_HOST,
    model: str | Path | None = None,
    db: str | None = None,
    backend: str = DEFAULT_BACKEND,
    max_upload_mb: float = limits.MAX_UPLOAD_MIB,
    metrics_port: int | None = None,
) -> int:
    """Start the clinic web app on http://localhost:PORT (research use only).

    Serves the bundled model (or --model DIR / $PNEUMO_MODEL) on the engine of `pneumo predict`
    and `pneumo serve` (--backend, default auto), stores patient records in SQLite (--db PATH
    or any SQLAlchemy URL; default $PNEUMO_DB or ~/.local/share/pneumo/pneumo.db), migrated
    before the server starts, and asks for a password when $PNEUMO_APP_PASSWORD_HASH is set
    (see `--hash-password`). Listens on localhost unless --host says otherwise (behind a proxy:
    see docs/app.md). With --metrics-port N (or $PNEUMO_APP_METRICS_PORT) it serves Prometheus
    metrics on http://HOST:N/metrics, HOST being --host; off by default. Stops with Ctrl+C or SIGTERM, and when its output is closed, which stop
    the Streamlit server too; the server also stops when this process is killed.
    """
    if not 1 <= port <= 65535:
        raise PneumoError(f"--port must be in 1..65535, got {port}")
    if not host.strip() or any(c.isspace() for c in host):
        raise PneumoError(f"--host must be a host name or address, got {host!r}")
    require("app", "pneumo app", "streamlit", "fpdf", "sqlalchemy", "alembic")
    metrics_port = _metrics_port(metrics_port, port)
    from pneumo.app.settings import AppSettings
    from pneumo.inference.engine import check_backend, model_prepared, prepare_model
    from pneumo.models.checkpoint import resolve_model_dir

    check_backend(backend, "--backend")
    model_dir = resolve_model_dir(model)  # fail here, with the reason, not in the browser
    try:
        AppSettings(model_dir=str(model_dir), db=db, backend=backend, max_upload_mb=max_upload_mb)
    except ValueError as exc:
        raise PneumoError(str(exc)) from None
    migrate_at_start(db)
    if not model_prepared(model_dir, backend=backend):
        # the first visitor should not wait for the one-off export (and accuracy guard)
        prepare_model(model_dir, backend=backend)
    env = dict(os.environ)
    env.update(
        PNEUMO_MODEL=str(model_dir), PNEUMO_BACKEND=backend, PNEUMO_MAX_UPLOAD_MB=str(max_upload_mb)
    )
    if db:
        env["PNEUMO_DB"] = db
    env["PNEUMO_APP_METRICS_PORT"] = str(metrics_port or 0)
    env["PNEUMO_APP_METRICS_HOST"] = host
    shown = "localhost" if host in ("localhost", "127.0.0.1", "::1") else host
    log.info("pneumo app: http://%s:%d (model %s)", shown, port, model_dir)
    if metrics_port:
        log.info("app metrics: http://%s:%d/metrics", shown, metrics_port)
    proc = subprocess.Popen(
        streamlit_command(port, max_upload_mb, host),
        env=env,
        stdin=subprocess.PIPE,  # never written: the server stops when it closes (we are gone)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return supervise(proc)


def _metrics_port(flag: int | None, app_port: int) -> int | None:
    """The metrics port asked for (the flag, else the environment), checked; None: off."""
    from pneumo.app.metrics import check_metrics_port, metrics_port_from_env

    if flag is not None:
        check_metrics_port(flag)
    chosen = flag if flag is not None else metrics_port_from_env()
    if not chosen:
        return None
    if chosen == app_port:
        raise PneumoError(f"--metrics-port must differ from --port ({app_port})")
    require("app", "pneumo app --metrics-port", "prometheus_client")
    return chosen


def migrate_at_start(db: str | None) -> None:
    """Bring the records database up to date before the server starts, so that a database that
    cannot be reached or migrated stops `pneumo app` with the reason (and is logged) instead of
    a server that answers its health check and refuses every page."""
    from pneumo.storage.db import StorageError, create_db_engine, database_url, migrate, redact

    logging.getLogger("alembic").setLevel(logging.WARNING)
    url = database_url(db)
    engine = create_db_engine(url)
    try:
        migrate(engine)
    except StorageError as exc:
        raise PneumoError(
            f"{exc}; the app was not started. When the database is back, run "
            f"`pneumo db migrate --db {redact(url)}` or start the app again"
        ) from None
    finally:
        engine.dispose()


OUTPUT_CLOSED = 128 + signal.SIGPIPE
"""Exit status when our output was closed (`pneumo app | head`): what a shell reports for a
program stopped by SIGPIPE."""


def supervise(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    """Relay the server ``proc``'s output and wait for it. Ctrl+C, SIGTERM (service managers,
    containers), SIGHUP and our own output being closed stop it too, and the exit status says
    which (128 + signal). The handlers are installed whatever was inherited: a background job
    starts with SIGINT ignored, and `kill -INT` must still stop the app."""
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    closed = threading.Event()
    relays = [
        threading.Thread(target=_relay, args=(src, fd, closed), daemon=True)
        for src, fd in ((proc.stdout, 1), (proc.stderr, 2))
        if src is not None
    ]
    for relay in relays:
        relay.start()
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            else:
                for relay in relays:
                    relay.join(timeout=1)
                return code
            if received:
                log.info("stopping the app (signal %d)", received[0])
                _stop_child(proc, grace_s)
                return 130 if received[0] == signal.SIGINT else 128 + received[0]
            if closed.is_set() or _output_closed(1) or _output_closed(2):
                log.info("stopping the app: its output was closed")
                _stop_child(proc, grace_s)
                return OUTPUT_CLOSED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.stdin is not None:
            proc.stdin.close()


def _relay(src, fd: int, closed: threading.Event) -> None:
    """Copy the server's output to our ``fd`` until it ends; once ``fd`` is closed, keep
    reading (the server must never block on a full pipe) and say so through ``closed``."""
    while data := os.read(src.fileno(), 65536):
        while data and not closed.is_set():
            try:
                data = data[os.write(fd, data) :]
            except OSError:
                closed.set()


def _output_closed(fd: int) -> bool:
    """Whether nobody reads ``fd`` any more (a pipe whose reader exited, a hung-up terminal),
    seen without writing to it."""
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: only errors and hang-ups are reported
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
