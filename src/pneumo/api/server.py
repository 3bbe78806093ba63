"""``pneumo serve``: run the REST API under uvicorn (kept import-light for ``--help``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def _preload_jemalloc(env: dict[str, str], backend: str) -> None:
    """Preload jemalloc in the serving process, which returns freed decode buffers to the
    system instead of letting the heap grow under load (`benchmarks/run_all.py --only api`
    measures peak memory both ways). PNEUMO_JEMALLOC=0 turns it off. Never under OpenVINO:
    its runtime aborts (double free) when jemalloc is preloaded."""
    if env.get("PNEUMO_JEMALLOC", "1") == "0" or not JEMALLOC.is_file():
        return
    if backend == "openvino" or "jemalloc" in env.get("LD_PRELOAD", ""):
        return
    env["LD_PRELOAD"] = f"{JEMALLOC}:{env.get('LD_PRELOAD', '')}".rstrip(":")


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | Path | None = None,
    workers: int = 1,
    backend: str = "auto",
    precision: str = "auto",
    api_key: str | None = None,
) -> None:
    """Serve the REST API: POST /v1/predict (multipart field `files`: JPEG, PNG or DICOM),
    GET /v1/health (alive), GET /v1/ready (model loaded, room in the queue), GET /v1/model,
    GET /metrics (Prometheus); OpenAPI at /openapi.json and docs at /docs. The port opens at once and the model loads
    behind it (on first use on a machine, after its export and accuracy guard): meanwhile
    /v1/ready and predictions answer 503 with the reason and Retry-After.

    Settings come from the environment: PNEUMO_API_KEY (at least 8 characters; then the
    X-API-Key header is required, exactly once, on everything but /v1/health and /v1/ready;
    /docs, /redoc and /openapi.json too unless PNEUMO_PUBLIC_DOCS=1, /metrics unless
    PNEUMO_PUBLIC_METRICS=1), PNEUMO_MAX_UPLOAD_MB (request size cap, default 20),
    PNEUMO_MAX_PIXELS and PNEUMO_MAX_REQUEST_PIXELS (decoded pixels per image, default 40
    million, and per request, default 160 million, read from the headers before decoding),
    PNEUMO_DECODE_BUDGET_MB (memory for concurrent decodes, default 1536), PNEUMO_MODEL,
    PNEUMO_BACKEND, PNEUMO_PRECISION, PNEUMO_THREADS, PNEUMO_BATCH_WAIT_MS (how long a request
    waits for others to share its forward pass, default 2) and PNEUMO_QUEUE_IMAGES (images in
    flight before new requests get 503 and Retry-After, default 256), PNEUMO_READ_TIMEOUT_S
    (longest pause while a request arrives, default 10: headers must be complete within it) and
    PNEUMO_MIN_UPLOAD_KIB_S (slowest average upload after that, default 64); slower requests
    get 408 and are disconnected, and a request without the key gets 401 before its body is
    read. Each worker process loads the model once; threads are split between them. Every
    answer and log line carries a request id (X-Request-ID, the client's own when sane);
    PNEUMO_LOG_FORMAT=json writes each log line as one JSON object. Access
    logs leave out query strings and the probes (/v1/health, /v1/ready, /metrics).
    """
    from pneumo.errors import PneumoError
    from pneumo.extras import require

    require("api", "pneumo serve", "fastapi", "uvicorn", "prometheus_client", "pythonjsonlogger")

    if not 1 <= port <= 65535:
        raise PneumoError(f"--port must be in 1..65535, got {port}")
    if not 1 <= workers <= 256:
        raise PneumoError(f"--workers must be in 1..256, got {workers}")
    from pneumo.api.settings import ApiSettings
    from pneumo.inference.engine import resolve_backend
    from pneumo.inference.predictor import default_threads
    from pneumo.models.checkpoint import resolve_model_dir

    # settings travel to the server (and its workers) through the environment
    env = dict(os.environ)
    env["PNEUMO_MODEL"] = str(resolve_model_dir(model))
    env["PNEUMO_BACKEND"] = backend
    env["PNEUMO_PRECISION"] = precision
    if api_key:
        env["PNEUMO_API_KEY"] = api_key
    if workers > 1 and "PNEUMO_THREADS" not in env:
        env["PNEUMO_THREADS"] = str(max(1, default_threads() // workers))
    ApiSettings.from_env(env)  # fail here, with a clear message, rather than in each worker
    from pneumo.api.request_id import log_config

    log_config()  # PNEUMO_LOG_FORMAT too
    _preload_jemalloc(env, resolve_backend(backend))
    # a fresh interpreter that imports only the API: nothing the rest of the CLI loads (torch
    # for training) stays in the serving processes
    argv = [sys.executable, "-m", "pneumo.api.server", host, str(port), str(workers)]
    os.execve(sys.executable, argv, env)


def _run(host: str, port: int, workers: int) -> None:
    """What ``python -m pneumo.api.server HOST PORT WORKERS`` runs: uvicorn over the app."""
    import uvicorn

    from pneumo.api.request_id import log_config

    uvicorn.run(
        "pneumo.api.main:app_from_env",
        log_config=log_config(),  # the request id in every line
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        http="pneumo.api.protocol:HeadTimeoutProtocol",  # slow request heads time out
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
