"""`pneumo serve` as a user runs it: a real uvicorn process on loopback (factory mode, settings from the environment, two workers) with the bundled model, over HTTP,
starting from an empty cache (export and accuracy guard on first use)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pneumo.models.checkpoint import BUNDLED_MODEL_DIR, read_metadata
from processes import stop_group

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

KEY = "k-" + "x" * 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = {**os.environ, "PNEUMO_API_KEY": KEY, "PNEUMO_CACHE": str(tmp / "cache")}
    env.pop("PNEUMO_MODEL", None)
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # the first start exports and guards the model
        while True:
            assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "pneumo serve did not become ready"
            time.sleep(0.5)
        yield url, proc
    finally:
        stop_group(proc, timeout=30)
        log.close()


def _xrays(originals_dir):
    normal = sorted((originals_dir / "NORMAL").glob("*.jpeg"))[0]
    sick = sorted((originals_dir / "PNEUMONIA").glob("*.jpeg"))[1]
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (normal, sick)]


def test_real_server_answers_with_the_bundled_model(server, originals_dir):
    url, _ = server
    files = _xrays(originals_dir)
    assert httpx.post(url + "/v1/predict", files=files, timeout=60).status_code == 401
    r = httpx.post(url + "/v1/predict", files=files, headers={"X-API-Key": KEY}, timeout=60)
    assert r.status_code == 200, r.text
    labels = [row["label"] for row in r.json()["results"]]
    assert labels == ["NORMAL", "PNEUMONIA"]
    meta = httpx.get(url + "/v1/model", headers={"X-API-Key": KEY}, timeout=10).json()
    # the bundled model's own operating point, placed on validation
    assert meta["threshold"] == pytest.approx(read_metadata(BUNDLED_MODEL_DIR).threshold)
    if meta["backend"] == "openvino":  # the guard ran on the validation split at first start
        guard = meta["precision_guard"]
        assert guard["n"] == 786 and meta["precision"] == guard["chosen"]
        assert {"bf16", "int8"} <= set(guard["verdicts"])


def test_concurrent_clients_all_get_their_own_answers(server, originals_dir):
    url, _ = server
    files = _xrays(originals_dir)

    def one(i: int):
        picked = [files[i % 2]]
        with httpx.Client(headers={"X-API-Key": KEY}, timeout=120) as client:
            r = client.post(url + "/v1/predict", files=picked)
            return i, r.status_code, r.json()

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(64)))
    assert all(code == 200 for _, code, _ in answers), [a[1:] for a in answers if a[1] != 200]
    for i, _, body in answers:
        assert body["results"][0]["label"] == ("NORMAL", "PNEUMONIA")[i % 2]


def test_serving_processes_never_load_torch(server):
    """torch is needed only for the one-off export, done in a child process that has exited."""
    _, proc = server
    pids = _descendants(proc.pid)
    assert len(pids) >= 3  # the supervisor and two workers
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps, f"process {pid} of pneumo serve has torch loaded"
