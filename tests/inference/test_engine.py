"""The engine: ONNX and torch agree, exports are cached, bad files never sink a batch."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import ModelError


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7])
def test_onnx_matches_torch_to_1e4(onnx_predictor, torch_predictor, n):
    x = _batch(n, seed=n)
    logits_o, feats_o = onnx_predictor.forward(x)
    logits_t, feats_t = torch_predictor.forward(x)
    assert logits_o.shape == (n, 2) and feats_o.shape == feats_t.shape
    p_o, p_t = onnx_predictor.probabilities(logits_o), torch_predictor.probabilities(logits_t)
    assert p_o.std() > 0.05 or n == 1, "test model should give spread-out probabilities"
    np.testing.assert_allclose(p_o, p_t, atol=1e-4)
    np.testing.assert_allclose(feats_o, feats_t, atol=1e-4, rtol=1e-3)


def test_backends_agree_end_to_end_on_files(onnx_predictor, torch_predictor, xray_files):
    a = onnx_predictor.predict_sources(xray_files)
    b = torch_predictor.predict_sources(xray_files)
    assert [p.label for p in a] == [p.label for p in b]
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], atol=1e-4)
    np.testing.assert_allclose([p.ood_score for p in a], [p.ood_score for p in b], rtol=1e-3)


def test_export_is_cached_once_per_machine_and_carries_metadata(tiny_model, onnx_cache, tmp_path):
    from pneumo.inference.export import (
        cached_onnx_path,
        embedded_metadata,
        ensure_onnx,
        export_onnx,
    )

    cached = ensure_onnx(tiny_model)
    assert cached.parent == onnx_cache / "onnx" and cached.is_file()
    assert cached == cached_onnx_path(tiny_model)
    stamp = cached.stat().st_mtime_ns
    assert ensure_onnx(tiny_model) == cached and cached.stat().st_mtime_ns == stamp
    out = export_onnx(tiny_model, tmp_path / "m.onnx")
    meta = embedded_metadata(out)
    assert meta.backbone == "test_efficientnet" and meta.temperature == 1.5


def test_export_has_dynamic_batch_and_three_outputs(onnx_predictor):
    outputs = [o.name for o in onnx_predictor.session.get_outputs()]
    assert outputs == ["logits", "features", "cam"]
    assert not isinstance(onnx_predictor.session.get_inputs()[0].shape[0], int)


def test_bad_files_keep_the_others(onnx_predictor, xray_files, tmp_path):
    truncated = tmp_path / "cut.jpeg"
    truncated.write_bytes(xray_files[0].read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    sources = [
        xray_files[0],
        tmp_path / "missing.jpeg",
        xray_files[1],
        truncated,
        xray_files[2],
        text,
        b"\x00" * 10,
    ]
    onnx_predictor.batch_size = 2  # bad items straddle batch boundaries
    try:
        preds = onnx_predictor.predict_sources(sources)
    finally:
        onnx_predictor.batch_size = 32
    assert len(preds) == len(sources)
    good = [0, 2, 4]
    for i, p in enumerate(preds):
        if i in good:
            assert p.error is None and p.label in ("NORMAL", "PNEUMONIA"), p
        else:
            assert p.error and p.label is None and p.probability is None, p
    assert "file not found" in preds[1].error and "missing.jpeg" in preds[1].error
    assert "cut.jpeg" in preds[3].error
    assert "notes.png" in preds[5].error
    # results line up with their inputs, not shifted by the failures
    alone = onnx_predictor.predict_sources([xray_files[1]])[0]
    assert preds[2].probability == pytest.approx(alone.probability, abs=1e-6)


def test_predict_sources_equals_predict_images(onnx_predictor, xray_files):
    from pneumo.data.decode import load_grey

    small = xray_files[:5]  # no draft-mode shrink below 64 px on these
    a = onnx_predictor.predict_sources(small)
    b = onnx_predictor.predict_images([load_grey(p) for p in small], [str(p) for p in small])
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], atol=1e-5)
    assert [p.source for p in a] == [str(p) for p in small]


def test_label_follows_threshold_and_band(onnx_predictor, xray_files):
    preds = onnx_predictor.predict_sources(xray_files)
    meta = onnx_predictor.metadata
    lo, hi = meta.uncertain_band
    for p in preds:
        assert p.label == ("PNEUMONIA" if p.probability >= meta.threshold else "NORMAL")
        assert p.confidence == pytest.approx(max(p.probability, 1 - p.probability))
        assert p.uncertain == (lo <= p.probability <= hi)
    assert len({p.label for p in preds}) == 2, "the test model should give both classes"


def test_temperature_softens_probabilities(onnx_predictor):
    logits = np.array([[0.0, 3.0]])
    p1 = onnx_predictor.probabilities(logits)[0]
    assert p1 == pytest.approx(1 / (1 + np.exp(-3.0 / 1.5)))  # metadata temperature 1.5


def test_ood_cutoff_and_colour_images_flagged(onnx_predictor, xray_files, tmp_path):
    meta = onnx_predictor.metadata
    grey = onnx_predictor.predict_sources(xray_files[:3])
    assert all(p.ood_score is not None for p in grey)
    rng = np.random.default_rng(1)
    colour = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), "RGB")
    colour.save(tmp_path / "photo.jpeg")
    grey_rgb = Image.open(xray_files[0]).convert("RGB")  # grey picture saved as RGB: still fine
    grey_rgb.save(tmp_path / "grey_rgb.jpeg")
    photo, grey_as_rgb = onnx_predictor.predict_sources(
        [tmp_path / "photo.jpeg", tmp_path / "grey_rgb.jpeg"]
    )
    assert photo.ood and not grey_as_rgb.ood
    assert onnx_predictor.predict_images([colour])[0].ood
    saved = onnx_predictor.metadata
    try:
        onnx_predictor.metadata = dataclasses.replace(
            meta, ood=dataclasses.replace(meta.ood, cutoff=0.0)
        )
        assert all(p.ood for p in onnx_predictor.predict_sources(xray_files[:3]))
        onnx_predictor.metadata = dataclasses.replace(
            meta, ood=dataclasses.replace(meta.ood, cutoff=1e9)
        )
        assert not any(p.ood for p in onnx_predictor.predict_sources(xray_files[:3]))
    finally:
        onnx_predictor.metadata = saved


def test_predictor_is_thread_safe(onnx_predictor):
    x = _batch(4, seed=3)
    expected = onnx_predictor.forward(x)[0]
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(onnx_predictor.forward(x)[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-5)


def test_batching_predictor_merges_concurrent_calls(onnx_predictor):
    from pneumo.inference.batching import BatchingPredictor

    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(onnx_predictor, name)

        def forward(self, batch):
            calls.append(len(batch))
            return onnx_predictor.forward(batch)

    batched = BatchingPredictor(Counting())
    xs = [_batch(1, seed=i) for i in range(16)]
    out = [None] * 16
    barrier = threading.Barrier(16)

    def one(i):
        barrier.wait()
        out[i] = batched.forward(xs[i])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batched.close()
    for i in range(16):
        np.testing.assert_allclose(out[i], onnx_predictor.forward(xs[i])[0], atol=1e-5)
    assert sum(calls) == 16 and max(calls) > 1, calls


def test_bf16_torch_is_close(tiny_model):
    from pneumo.inference.engine import load_predictor

    fp32 = load_predictor(tiny_model, backend="torch")
    bf16 = load_predictor(tiny_model, backend="torch", precision="bf16")
    x = _batch(6)
    p32 = fp32.probabilities(fp32.forward(x)[0])
    p16 = bf16.probabilities(bf16.forward(x)[0])
    assert np.abs(p32 - p16).max() < 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"backend": "onnx", "precision": "bf16"}, "ONNX Runtime runs fp32"),
        ({"backend": "onnx", "precision": "int8"}, "OpenVINO backend"),
        ({"backend": "torch", "precision": "int8"}, "OpenVINO backend"),
    ],
)
def test_bad_options_explain_themselves(tiny_model, kwargs, message):
    from pneumo.inference.engine import load_predictor

    with pytest.raises(ModelError, match=message):
        load_predictor(tiny_model, **kwargs)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    from pneumo.inference.engine import load_predictor

    with pytest.raises(ModelError, match="no model here"):
        load_predictor(tmp_path)


def test_a_failed_colour_check_is_that_images_error(torch_predictor, xray_files, monkeypatch):
    """Never a silent chroma of 0, which would switch the colour check off for that file."""
    import pneumo.inference.pipeline as pipeline

    def broken(img):
        raise OSError("decoder exploded")

    colour = xray_files[0].parent / "colour.png"
    Image.new("RGB", (256, 256), (200, 30, 30)).save(colour)
    monkeypatch.setattr(pipeline, "colour_chroma", broken)
    preds = torch_predictor.predict_sources([colour, xray_files[0]])
    assert preds[0].error is not None and "colour check failed" in preds[0].error
    assert preds[1].error is None  # a grey file stops after its header: no check to fail


def test_a_shipped_graph_is_served_and_a_stale_one_is_not(tiny_model, tmp_path, monkeypatch):
    """model.onnx in the model directory is what serving runs (nothing exported, no torch);
    left beside other weights it is not used: the export of the new weights is."""
    import shutil

    import onnx
    from safetensors.numpy import load_file, save_file

    from pneumo.inference.engine import load_predictor
    from pneumo.inference.export import cached_onnx_path, ensure_onnx, export_onnx

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))  # nothing exported here yet
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    shipped = export_onnx(model, model / "model.onnx")
    stored = onnx.load(str(shipped)).graph.initializer
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in stored) > 10
    assert ensure_onnx(model) == shipped and not cached_onnx_path(model).exists()
    predictor = load_predictor(model, backend="onnx")
    eager = load_predictor(model, backend="torch")
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(predictor.forward(x)[0], eager.forward(x)[0], atol=1e-4)

    tensors = load_file(str(model / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("classifier.bias"))
    tensors[key] = tensors[key] + np.asarray(1.0, tensors[key].dtype)
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pneumo-model/1"})
    assert ensure_onnx(model) == cached_onnx_path(model)
