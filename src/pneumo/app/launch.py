"""Start the Streamlit page as a local server (what `pneumo app` and `make app` run)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pneumo.errors import PneumoError
from pneumo.extras import require

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().with_name("main.py")


def streamlit_command(port: int, max_upload_mb: float) -> list[str]:
    """The ``streamlit run`` command line: localhost only, headless, no usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PAGE),
        "--server.port",
        str(port),
        "--server.address",
        "localhost",
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
    model: str | Path | None = None,
    db: str | None = None,
    backend: str = "onnx",
    max_upload_mb: float = 20.0,
) -> int:
    """Start the clinic web app on http://localhost:PORT (research use only).

    Serves the bundled model (or --model DIR / $PNEUMO_MODEL), stores patient records in SQLite
    (--db PATH or any SQLAlchemy URL; default $PNEUMO_DB or ~/.local/share/pneumo/pneumo.db) and
    asks for a password when $PNEUMO_APP_PASSWORD_HASH is set (see `--hash-password`).
    Stops with Ctrl+C or SIGTERM, which stop the Streamlit server too.
    """
    if not 1 <= port <= 65535:
        raise PneumoError(f"--port must be in 1..65535, got {port}")
    require("app", "pneumo app", "streamlit", "fpdf", "sqlalchemy", "alembic")
    from pneumo.app.settings import AppSettings
    from pneumo.models.checkpoint import resolve_model_dir

    model_dir = resolve_model_dir(model)  # fail here, with the reason, not in the browser
    try:
        AppSettings(model_dir=str(model_dir), db=db, backend=backend, max_upload_mb=max_upload_mb)
    except ValueError as exc:
        raise PneumoError(str(exc)) from None
    env = dict(os.environ)
    env.update(
        PNEUMO_MODEL=str(model_dir), PNEUMO_BACKEND=backend, PNEUMO_MAX_UPLOAD_MB=str(max_upload_mb)
    )
    if db:
        env["PNEUMO_DB"] = db
    if backend == "onnx":
        from pneumo.inference.export import ensure_onnx

        ensure_onnx(model_dir)  # the first visitor should not wait for the one-off export
    log.info("pneumo app: http://localhost:%d (model %s)", port, model_dir)
    proc = subprocess.Popen(
        streamlit_command(port, max_upload_mb), env=env, preexec_fn=_die_with_parent
    )
    return supervise(proc)


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when this process dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - not Linux: SIGTERM/SIGINT forwarding still works
        pass


def supervise(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    """Wait for the server ``proc``; Ctrl+C, SIGTERM (service managers, containers) and SIGHUP
    stop it too, and the exit status says which (128 + signal)."""

    def on_signal(signum, _frame):
        raise _Stop(signum)

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop_child(proc, grace_s)
        return 130
    except _Stop as stop:
        log.info("stopping the app (signal %d)", stop.signum)
        _stop_child(proc, grace_s)
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
