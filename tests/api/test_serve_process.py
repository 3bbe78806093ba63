"""`pneumo serve` as a user runs it: a real uvicorn process on loopback (jemalloc re-exec,
factory mode, settings from the environment, two workers) with the bundled model, over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from processes import stop_group

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_answers_with_the_bundled_model(originals_dir, tmp_path):
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    port, key = _free_port(), "k-" + "x" * 30
    env = {**os.environ, "PNEUMO_API_KEY": key, "PNEUMO_CACHE": str(tmp_path / "cache")}
    env.pop("PNEUMO_MODEL", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # the first start exports the ONNX file
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "pneumo serve did not become healthy"
            time.sleep(0.5)
        normal = sorted((originals_dir / "NORMAL").glob("*.jpeg"))[0]
        sick = sorted((originals_dir / "PNEUMONIA").glob("*.jpeg"))[1]
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (normal, sick)]
        assert httpx.post(url + "/v1/predict", files=files, timeout=60).status_code == 401
        r = httpx.post(url + "/v1/predict", files=files, headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 200, r.text
        labels = [row["label"] for row in r.json()["results"]]
        assert labels == ["NORMAL", "PNEUMONIA"]
        meta = httpx.get(url + "/v1/model", headers={"X-API-Key": key}, timeout=10).json()
        assert meta["threshold"] == pytest.approx(0.5)
    finally:
        stop_group(proc, timeout=30)
        log.close()
