"""The OpenVINO backend: the same answers as torch at fp32, chosen by default, its IR cached."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("openvino")


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def ov_predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model, backend="openvino", precision="fp32")


@pytest.mark.parametrize("n", [1, 7, 33])
def test_openvino_fp32_matches_torch_to_1e4(ov_predictor, torch_predictor, n):
    x = _batch(n, seed=n)
    logits_v, feats_v = ov_predictor.forward(x)
    logits_t, feats_t = torch_predictor.forward(x)
    p_v, p_t = ov_predictor.probabilities(logits_v), torch_predictor.probabilities(logits_t)
    assert p_v.shape == (n,) and (p_t.std() > 0.05 or n == 1)
    np.testing.assert_allclose(p_v, p_t, atol=1e-4)
    np.testing.assert_allclose(feats_v, feats_t, atol=1e-4, rtol=1e-3)


def test_openvino_is_the_default_and_agrees_on_files(tiny_model, torch_predictor, xray_files):
    from pneumo.inference.engine import load_predictor

    default = load_predictor(tiny_model)
    assert (default.backend, default.precision) == ("openvino", "fp32")  # no guard: fp32
    a = default.predict_sources(xray_files)
    b = torch_predictor.predict_sources(xray_files)
    assert [p.label for p in a] == [p.label for p in b]
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], atol=1e-4)
    np.testing.assert_allclose([p.ood_score for p in a], [p.ood_score for p in b], rtol=1e-3)


def test_ir_is_cached_once_per_machine(tiny_model, onnx_cache, ov_predictor):
    from pneumo.inference.export import weights_digest
    from pneumo.inference.openvino_backend import cached_ir_path, ensure_ir

    xml = ensure_ir(tiny_model)
    assert xml == cached_ir_path(tiny_model) == ov_predictor.model_path
    assert xml.parent == onnx_cache / "openvino" and weights_digest(tiny_model) in xml.name
    stamp = xml.stat().st_mtime_ns
    assert ensure_ir(tiny_model) == xml and xml.stat().st_mtime_ns == stamp
    assert any((onnx_cache / "openvino" / "blobs").iterdir()), "compiled blob not cached"


def test_each_thread_gets_its_own_request(ov_predictor):
    x = _batch(4, seed=3)
    expected = ov_predictor.forward(x)[0]
    results, errors = [], []

    def work(seed):
        try:
            for _ in range(5):
                other = ov_predictor.forward(_batch(2, seed=seed))  # different shapes at once
                results.append((ov_predictor.forward(x)[0], other[0].shape))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    for logits, shape in results:
        np.testing.assert_allclose(logits, expected, atol=1e-5)
        assert shape == (2, 2)


def test_forced_bf16_stays_close(tiny_model, ov_predictor):
    from pneumo.inference.engine import load_predictor

    bf16 = load_predictor(tiny_model, backend="openvino", precision="bf16")
    assert bf16.precision == "bf16"
    x = _batch(6)
    p = bf16.probabilities(bf16.forward(x)[0])
    ref = ov_predictor.probabilities(ov_predictor.forward(x)[0])
    assert np.abs(p - ref).max() < 0.1
