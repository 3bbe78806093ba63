"""`pneumo serve` while its model loads (issue 19): the port opens at once; /v1/health says
alive, /v1/ready and predictions answer 503 with the reason and Retry-After until the model is
prepared, loaded and warmed. A real process, polled from its start, with a fresh cache so the
first-use export (torch, in a child process) makes the load slow for real. Its log carries
request ids and leaves the probes out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from processes import stop_group
from synthetic import build_tiny_model

pytestmark = pytest.mark.slow

KEY = "loading-key-" + "l" * 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_503_while_loading_then_serves(tmp_path, make_jpeg):
    model = build_tiny_model(tmp_path / "tiny")
    port = _free_port()
    env = {**os.environ, "PNEUMO_API_KEY": KEY, "PNEUMO_CACHE": str(tmp_path / "cache")}
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "pneumo", "serve", "--port", str(port)]
    command += ["--model", str(model), "--backend", "onnx"]
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    files = [("files", ("a.jpeg", make_jpeg(), "image/jpeg"))]
    keyed = {"X-API-Key": KEY}
    loading_answers = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            started = time.monotonic()
            while True:  # poll from the start: the port opens before the model is ready
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() - started < 120, "never ready\n" + log_path.read_text()
                try:
                    ready = client.get("/v1/ready")
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if ready.status_code == 200:
                    break
                loading_answers += 1
                assert ready.status_code == 503 and int(ready.headers["Retry-After"]) >= 1
                assert ready.json()["model_loaded"] is False
                assert ready.json()["reason"].startswith(("preparing", "loading", "warming"))
                health = client.get("/v1/health")
                assert health.status_code == 200 and health.json()["status"] in ("loading", "ok")
                busy = client.post("/v1/predict", files=files, headers=keyed)
                if busy.status_code == 503:  # (unless it finished loading meanwhile)
                    assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["detail"]
                assert client.post("/v1/predict", files=files).status_code == 401
                time.sleep(0.2)
            assert loading_answers >= 3, "the port opened only once the model was ready"
            assert client.get("/v1/health").json()["status"] == "ok"
            traced = {**keyed, "X-Request-ID": "trace-0123456789"}
            r = client.post("/v1/predict", files=files, headers=traced)
            assert r.status_code == 200 and r.json()["results"][0]["label"], r.text
            assert r.headers["X-Request-ID"] == "trace-0123456789"
    finally:
        stop_group(proc, timeout=20)
    # the access log: the request under its id, and none of the many probes above
    lines = log_path.read_text().splitlines()
    assert any("[trace-0123456789]" in x and "POST /v1/predict" in x for x in lines), lines
    assert not [x for x in lines if "GET /v1/ready" in x or "GET /v1/health" in x]
