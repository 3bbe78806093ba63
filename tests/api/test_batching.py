"""Concurrent requests share forward passes; a full queue answers 503 with Retry-After at once;
readiness says whether the model is loaded and takes work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pneumo.inference.predictor import Predictor


class Gated(Predictor):
    """The test model behind a gate: forward passes wait until ``gate`` opens; counts them."""

    def __init__(self, inner: Predictor):
        self.inner = inner
        self.metadata = inner.metadata
        self.ood_tensors = inner.ood_tensors
        self.backend = inner.backend
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def forward(self, batch):
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.calls.append(len(batch))
        return self.inner.forward(batch)


def _client(predictor, **settings):
    from fastapi.testclient import TestClient

    from pneumo.api.main import create_app
    from pneumo.api.settings import ApiSettings

    return TestClient(create_app(ApiSettings(**settings), predictor=predictor))


def _post(client, jpeg: bytes, name: str = "a.jpeg"):
    return client.post("/v1/predict", files=[("files", (name, jpeg, "image/jpeg"))])


def test_concurrent_requests_share_forward_passes_and_get_their_own_answers(
    api_predictor, make_jpeg
):
    gated = Gated(api_predictor)
    jpegs = [make_jpeg(seed, seed % 2) for seed in range(12)]
    expected = [p.probability for p in api_predictor.predict_sources(jpegs)]
    with _client(gated, batch_wait_ms=50) as client, ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(_post, client, jpeg, f"{i}.jpeg") for i, jpeg in enumerate(jpegs)]
        assert gated.entered.wait(30)  # the first pass is held: the others queue up behind it
        gated.gate.set()
        responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    got = [r.json()["results"][0] for r in responses]
    assert [g["filename"] for g in got] == [f"{i}.jpeg" for i in range(12)]
    np.testing.assert_allclose([g["probability"] for g in got], expected, atol=1e-5)
    assert sum(gated.calls) == 12 and len(gated.calls) < 12, gated.calls


def test_a_full_queue_is_503_with_retry_after_and_not_ready(api_predictor, make_jpeg):
    gated = Gated(api_predictor)
    with _client(gated, queue_images=2) as client, ThreadPoolExecutor(1) as pool:
        assert client.get("/v1/ready").status_code == 200
        files = [("files", (f"{i}.jpeg", make_jpeg(i), "image/jpeg")) for i in range(2)]
        first = pool.submit(client.post, "/v1/predict", files=files)
        assert gated.entered.wait(30)  # two images in flight: the queue is full
        busy = _post(client, make_jpeg(9))
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json()["detail"]
        ready = client.get("/v1/ready")
        assert ready.status_code == 503 and ready.json()["images_in_flight"] == 2
        assert ready.json()["reason"] == "the queue is full (2 of 2 images in flight)"
        assert client.get("/v1/health").status_code == 200  # alive, just busy
        gated.gate.set()
        assert first.result().status_code == 200
        assert _post(client, make_jpeg(9)).status_code == 200  # room again
        assert client.get("/v1/ready").json() == {
            "ready": True,
            "model_loaded": True,
            "images_in_flight": 0,
            "queue_limit": 2,
            "reason": None,
        }


def test_not_ready_before_the_model_is_loaded(api_predictor):
    client = _client(api_predictor)  # no `with`: the lifespan has not loaded anything
    r = client.get("/v1/ready")
    assert r.status_code == 503 and r.json()["model_loaded"] is False
    assert int(r.headers["Retry-After"]) >= 1 and "not loaded" in r.json()["reason"]


@pytest.mark.parametrize(
    ("name", "value"), [("PNEUMO_QUEUE_IMAGES", "0"), ("PNEUMO_BATCH_WAIT_MS", "-1")]
)
def test_batching_settings_are_checked(name, value):
    from pneumo.api.settings import ApiSettings
    from pneumo.errors import PneumoError

    with pytest.raises(PneumoError, match=name):
        ApiSettings.from_env({name: value})


def test_model_info_shows_the_precision_and_the_guard_figures(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from pneumo.inference.engine import load_predictor
    from pneumo.inference.guard import GuardReport, Verdict, _write_json, guard_path
    from synthetic import build_tiny_model

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    tiny_model = build_tiny_model(tmp_path / "tiny")
    refused = Verdict("bf16", 0.9, 0.05, 9, 0.09, 2, 0.3, False, ["9 decisions flipped (9.00%)"])
    report = GuardReport("fp32", "validation (100 films)", 100, 0.95, 80.0, {}, {"bf16": refused})
    _write_json(guard_path(tiny_model), report.to_dict())
    with _client(load_predictor(tiny_model, backend="openvino")) as client:
        body = client.get("/v1/model").json()
    assert body["backend"] == "openvino" and body["precision"] == "fp32"
    guard = body["precision_guard"]
    assert guard["chosen"] == "fp32" and guard["verdicts"]["bf16"]["flips"] == 9
    assert guard["verdicts"]["bf16"]["passed"] is False


def test_a_model_that_cannot_load_fails_health_and_readiness(tmp_path, make_jpeg, caplog):
    """Loading runs behind the bound port: when it fails, /v1/health turns 503 ("failed", so an
    orchestrator restarts the process) and /v1/ready and predictions say why, with no
    Retry-After (waiting will not help)."""
    import shutil
    import time

    from fastapi.testclient import TestClient

    from pneumo.api.main import create_app
    from pneumo.api.settings import ApiSettings
    from synthetic import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    broken = shutil.copytree(model, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with TestClient(create_app(ApiSettings(model_dir=broken, backend="torch"))) as client:
        deadline = time.monotonic() + 20
        while (health := client.get("/v1/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status_code == 503 and health.json()["status"] == "failed"
        ready = client.get("/v1/ready")
        assert ready.status_code == 503 and "Retry-After" not in ready.headers
        assert ready.json()["reason"] == "the model failed to load (the server's log says why)"
        assert "corrupt model weights" in caplog.text  # the cause, for the operator only
        r = client.post("/v1/predict", files=[("files", ("a.jpeg", make_jpeg(), "image/jpeg"))])
        assert r.status_code == 503 and r.json()["detail"] == ready.json()["reason"]
