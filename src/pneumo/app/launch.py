"""Start the Streamlit page as a local server (what `pneumo app` and `make app` run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from pneumo.errors import PneumoError

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
    Stops with Ctrl+C.
    """
    if not 1 <= port <= 65535:
        raise PneumoError(f"--port must be in 1..65535, got {port}")
    from pneumo.app.logic import AppSettings
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
    proc = subprocess.Popen(streamlit_command(port, max_upload_mb), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
