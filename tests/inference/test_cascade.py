"""Reduced precision that changes no decision: the fast precision for every film, fp32 again
for the films whose fast answer lies within the guard's margin of a decision edge."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import make_xray


def _decided(preds):
    return [(p.label, p.uncertain, p.ood) for p in preds]


class Planted:
    """A stand-in "fast precision" whose error is known: fp32's logits with the log-odds of
    PNEUMONIA moved by ``shift`` (what bf16's rounding does, by an amount the test sets)."""

    def __new__(cls, exact, shift: float):
        from pneumo.inference.predictor import Predictor

        class _Planted(Predictor):
            backend = exact.backend

            def forward(self, batch):
                logits, features = exact.forward(batch)
                logits = logits.copy()
                logits[:, 1] += shift * exact.metadata.temperature
                return logits, features

        fast = _Planted(exact.metadata, exact.ood_tensors, threads=1, precision="planted")
        return fast


def test_near_edges_and_the_measured_error_look_only_where_a_film_could_cross():
    from pneumo.inference.cascade import measured_error, near_edges

    assert near_edges(np.array([0.0, 0.9, 2.0]), [1.0], 0.15).tolist() == [False, True, False]
    ref = np.array([0.1, 5.0, 9.0])
    fast = ref + np.array([0.2, 0.1, 1.5])  # the confident film far from the edge moves most
    # reach = 2 x 1.5 = 3 from the edge at 0: only the first film could cross; its error counts
    assert measured_error(fast, ref, [0.0], safety=2.0) == pytest.approx(0.2)
    # the same error next to the edge sets the margin
    ref = np.array([0.1, 5.0, 0.5])
    fast = ref + np.array([0.2, 0.1, 1.5])
    assert measured_error(fast, ref, [0.0], safety=2.0) == pytest.approx(1.5)
    # repeated until it holds: reach 3 takes in the film at 1.0 (error 0.4), reach 0.8 leaves
    # it out again (it would need 2.5x the error next to the edge to cross): 0.2
    ref = np.array([0.1, 1.0, 9.0])
    fast = ref + np.array([0.2, -0.4, 1.5])
    assert measured_error(fast, ref, [0.0], safety=2.0) == pytest.approx(0.2)
    # but a film within reach of the smaller margin keeps its error in it
    ref = np.array([0.1, 0.7, 9.0])
    fast = ref + np.array([0.2, -0.4, 1.5])
    assert measured_error(fast, ref, [0.0], safety=2.0) == pytest.approx(0.4)


@pytest.fixture(scope="module")
def planted_films():
    """Generated films: the first half for the guard to measure on, the second half unseen."""
    return [make_xray(200 + i, i % 2, size=72) for i in range(64)]


def test_the_guards_margin_decides_which_films_run_again(onnx_predictor, planted_films):
    """With a planted error of 0.8 log-odds, the fast stand-in alone changes decisions; the
    cascade with the guard's margin (2 x the measured 0.8) changes none on films the guard has
    not seen, while a margin below the error it measured lets decisions change."""
    from dataclasses import replace

    from pneumo.inference.cascade import CascadePredictor, Margins
    from pneumo.inference.engine import OnnxPredictor
    from pneumo.inference.guard import judge_cascade

    # the tiny random model's log-odds lie within +-0.2: a colder temperature spreads them
    # over about +-8, like a trained model's, so that most films lie far from every edge
    meta = replace(onnx_predictor.metadata, temperature=0.02)
    exact = OnnxPredictor(onnx_predictor.onnx_path, meta, onnx_predictor.ood_tensors, threads=1)
    fast = Planted(exact, 0.8)
    seen, unseen = planted_films[:32], planted_films[32:]
    arrays = np.stack([exact.preprocess(img.convert("L")) for img in seen])
    logits32, feats32 = exact.forward(arrays)
    logits, feats = fast.forward(arrays)
    verdict = judge_cascade(
        "planted",
        logits32,
        logits,
        exact.ood_score(feats32),
        exact.ood_score(feats),
        exact.metadata,
        safety=2.0,
    )
    assert verdict.log_odds_error == pytest.approx(0.8, abs=1e-4)
    assert verdict.log_odds_margin == pytest.approx(1.6, abs=1e-3)
    assert verdict.changed_decisions == 0 and 0 < verdict.rerun_share < 1
    assert verdict.ood_margin == pytest.approx(0.0, abs=1e-6)  # the features were not moved

    reference = _decided(exact.predict_images(unseen))
    assert _decided(fast.predict_images(unseen)) != reference  # the planted error matters
    guarded = CascadePredictor(fast, exact, Margins(verdict.log_odds_margin, verdict.ood_margin))
    assert _decided(guarded.predict_images(unseen)) == reference
    assert 0 < guarded.rerun < guarded.films == len(unseen)
    assert guarded.precision == "planted+fp32"
    # heatmaps come from fp32 alone: the fast precision moves them
    two = unseen[:2]
    np.testing.assert_array_equal(guarded.heatmaps(two, [0, 1]), exact.heatmaps(two, [0, 1]))
    too_thin = CascadePredictor(fast, exact, Margins(0.2, verdict.ood_margin))
    assert _decided(too_thin.predict_images(unseen)) != reference
    assert too_thin.rerun < guarded.rerun


def test_auto_serves_a_cascade_only_when_its_replay_changed_no_decision(
    tiny_model, tmp_path, monkeypatch
):
    pytest.importorskip("openvino")
    from pneumo.inference.cascade import CASCADE_BATCH_SIZE
    from pneumo.inference.engine import load_predictor
    from pneumo.inference.guard import CascadeVerdict, GuardReport, Verdict, _write_json, guard_path
    from pneumo.inference.predictor import BATCH_SIZE

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))

    def report(changed: int) -> GuardReport:
        cascade = CascadeVerdict("bf16+fp32", 0.3, 0.6, 0.01, 0.02, 0.1, changed, 150.0, True)
        bf16 = Verdict("bf16", 0.9, 0.0, 3, 0.01, 0, 0.1, False, ["3 flips"], 200.0, cascade)
        return GuardReport("bf16+fp32", "validation (4 films)", 4, 1.0, 100.0, {}, {"bf16": bf16})

    _write_json(guard_path(tiny_model), report(0).to_dict())
    predictor = load_predictor(tiny_model, backend="openvino")
    assert predictor.precision == "bf16+fp32"
    assert predictor.margins.log_odds == 0.6 and predictor.margins.ood == 0.02
    assert predictor.precision_guard.verdicts["bf16"].cascade.rerun_share == 0.1
    # each precision at its own best batch unless one is asked for
    assert predictor.batch_size == CASCADE_BATCH_SIZE == 16
    assert load_predictor(tiny_model, backend="openvino", batch_size=4).batch_size == 4
    plain = load_predictor(tiny_model, backend="openvino", precision="fp32")
    assert plain.batch_size == BATCH_SIZE == 8
    _write_json(guard_path(tiny_model), report(1).to_dict())  # damaged or hand-edited
    assert load_predictor(tiny_model, backend="openvino").precision == "fp32"


def test_a_forced_cascade_without_the_guards_figures_says_why(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from pneumo.errors import ModelError
    from pneumo.inference.engine import load_predictor

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="needs the accuracy guard's measured error"):
        load_predictor(tiny_model, backend="openvino", precision="bf16+fp32")
    with pytest.raises(ModelError, match="runs on the OpenVINO backend"):
        load_predictor(tiny_model, backend="onnx", precision="bf16+fp32")


@pytest.mark.realdata
@pytest.mark.slow
def test_bundled_model_cascade_decides_like_fp32_on_real_validation_films(real_data_root):
    """The guard measures bf16 on every 8th validation film of the bundled model; the cascade
    then gives fp32's label, uncertain flag and OOD flag for those films and for as many films
    it never measured."""
    pytest.importorskip("openvino")
    from pneumo.inference.engine import load_predictor
    from pneumo.inference.guard import run_guard
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR
    from pneumo.models.films import read_films

    val = read_films(BUNDLED_MODEL_DIR, real_data_root).validation
    measured, unseen = val[::8], val[4::8]
    report = run_guard(BUNDLED_MODEL_DIR, measured, [], precisions=("bf16",))
    cascade = report.verdicts["bf16"].cascade
    assert cascade.changed_decisions == 0 and 0 < cascade.rerun_share < 0.5
    films = [r.path for r in measured + unseen]
    fp32 = load_predictor(precision="fp32").predict_sources(films)
    guarded = load_predictor(precision="bf16+fp32")
    fast = guarded.predict_sources(films)
    assert all(p.error is None for p in fp32)
    assert _decided(fast) == _decided(fp32)
    assert 0 < guarded.rerun < guarded.films == len(films)
    probability_change = max(
        abs(a.model_probability - b.model_probability) for a, b in zip(fast, fp32, strict=True)
    )
    assert probability_change > 0  # bf16 really ran: its probabilities differ from fp32's
