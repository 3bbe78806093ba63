"""The accuracy guard: reduced precision is used only when it decides like fp32 on validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo.inference.guard import (
    GuardLimits,
    GuardReport,
    Verdict,
    _write_json,
    chosen_cascade,
    guard_path,
    judge,
    roc_auc,
)

BAND = (0.2, 0.8)


def _judge(p_fp32, p, y, **limits):
    return judge(
        "bf16",
        np.array(y),
        np.array(p_fp32, dtype=float),
        np.array(p, dtype=float),
        threshold=0.5,
        band=BAND,
        limits=GuardLimits(**limits),
    )


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 2)  # with ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_identical_probabilities_pass():
    v = _judge([0.1, 0.6, 0.9], [0.1, 0.6, 0.9], [0, 1, 1])
    assert v.passed and v.flips == 0 and v.auc_change == 0 and not v.reasons


def test_a_flip_outside_the_uncertain_band_fails_even_when_rare():
    y = [0] * 500 + [1] * 500
    ref = [0.1] * 500 + [0.9] * 500
    near = ref.copy()
    near[0] = 0.55  # 0.1 -> 0.55: flipped, and fp32 was sure: outside the band
    v = _judge(ref, near, y, max_auc_change=1.0)
    assert v.flips == 1 and v.flip_share == pytest.approx(0.001)
    assert not v.passed and v.flips_outside_band == 1 and "outside" in v.reasons[0]


def test_flips_inside_the_band_pass_until_their_share_is_too_large():
    y = [0] * 500 + [1] * 500
    ref = [0.45] * 10 + [0.1] * 490 + [0.9] * 500
    moved = [0.55] * 10 + [0.1] * 490 + [0.9] * 500
    few = ref.copy()
    few[:5] = moved[:5]
    assert _judge(ref, few, y, max_auc_change=1.0).passed  # 0.5%: at the limit
    many = _judge(ref, moved, y, max_auc_change=1.0)
    assert not many.passed and many.flips == 10 and "flipped" in many.reasons[0]


def test_roc_auc_change_over_the_limit_fails():
    y = [0, 0, 1, 1]
    v = _judge([0.1, 0.2, 0.3, 0.4], [0.1, 0.35, 0.3, 0.4], y)  # no flip, AUC 1 -> 0.75
    assert v.flips == 0 and not v.passed and "ROC-AUC" in v.reasons[0]


@pytest.fixture(scope="module")
def guard_inputs(tmp_path_factory):
    from pneumo.data.discover import find_images
    from synthetic import write_dataset

    root = write_dataset(
        tmp_path_factory.mktemp("data") / "chest_xray", {"train": (8, 8), "val": (8, 8)}
    )
    return find_images(root, ["val"]), find_images(root, ["train"])


@pytest.mark.slow
def test_a_model_failing_the_guard_stays_fp32(tiny_model, guard_inputs):
    """int8 always moves probabilities a little: a zero-tolerance guard must refuse it, and
    ``precision="auto"`` must then load fp32."""
    pytest.importorskip("nncf")
    from pneumo.inference.engine import load_predictor
    from pneumo.inference.guard import guard_path, read_guard, run_guard

    val, train = guard_inputs
    strict = GuardLimits(max_probability_change=1e-6)
    report = run_guard(tiny_model, val, train, limits=strict, precisions=("int8",))
    verdict = report.verdicts["int8"]
    assert not verdict.passed and "probability moved" in " ".join(verdict.reasons)
    assert report.chosen == "fp32" and report.n == len(val)
    on_disk = json.loads(guard_path(tiny_model).read_text())
    assert on_disk["chosen"] == "fp32" and on_disk["verdicts"]["int8"]["passed"] is False
    assert read_guard(tiny_model).verdicts["int8"].flips == verdict.flips
    predictor = load_predictor(tiny_model, backend="openvino")
    assert predictor.precision == "fp32"
    # a forced precision is the user's call, guard or not
    assert load_predictor(tiny_model, backend="openvino", precision="int8").precision == "int8"


def test_auto_loads_what_the_guard_chose(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from pneumo.inference.engine import load_predictor

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    passed = _verdict("bf16", True, 200.0)
    report = GuardReport("bf16", "validation (4 films)", 4, 1.0, 100.0, {}, {"bf16": passed})
    _write_json(guard_path(tiny_model), report.to_dict())
    assert load_predictor(tiny_model, backend="openvino").precision == "bf16"
    assert load_predictor(tiny_model, backend="onnx").precision == "fp32"  # no bf16 in ORT


def test_without_validation_data_auto_is_fp32_and_nothing_is_cached(
    tiny_model, tmp_path, monkeypatch
):
    pytest.importorskip("openvino")
    from pneumo.inference.guard import guard_path, guarded_precision

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    assert guarded_precision(tiny_model) == "fp32"  # the tiny model records no training data
    assert not guard_path(tiny_model).exists()


def test_without_calibration_films_int8_is_left_out_and_bf16_still_judged(
    tiny_model, guard_inputs, tmp_path, monkeypatch
):
    pytest.importorskip("nncf")
    from pneumo.inference.guard import run_guard

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    val, _ = guard_inputs
    report = run_guard(tiny_model, val, [], precisions=("int8", "bf16"))
    assert set(report.verdicts) == {"bf16"} and report.n == len(val)


def _verdict(precision, passed, speed):
    return Verdict(precision, 0.9, 0.0, 0, 0.0, 0, 0.0, passed, [] if passed else ["x"], speed)


def _with_cascade(verdict, changed, gain, share=0.1, native=True):
    from pneumo.inference.guard import CascadeVerdict, cascade_refusals

    verdict.cascade = CascadeVerdict(
        f"{verdict.precision}+fp32", 0.3, 0.6, None, None, share, changed, 100.0 * gain
    )
    verdict.cascade.reasons = cascade_refusals(verdict.cascade, native=native, one_class=False)
    verdict.cascade.passed = not verdict.cascade.reasons
    return verdict


@pytest.mark.parametrize(
    ("cascades", "expected"),
    [
        ([("bf16", 0, 1.5), ("int8", 0, 1.3)], "int8+fp32"),  # int8 first, whatever the timing
        ([("bf16", 0, 1.5), ("int8", 1, 1.9)], "bf16+fp32"),  # int8 changed a decision
        ([("bf16", 2, 1.9), ("int8", 1, 1.6)], "fp32"),
        ([("bf16", 0, 0.7)], "bf16+fp32"),  # timed slower on a busy machine: still the same
        ([("bf16", 0, 1.9, 0.3)], "fp32"),  # re-runs too many films
        ([("bf16", 0, 1.9, 0.1, False)], "fp32"),  # bf16 emulated: no native instructions
    ],
)
def test_the_guard_chooses_only_a_cascade_that_changed_no_decision(cascades, expected):
    """bf16 alone passing the limits is not enough: ``auto`` serves a cascade whose replay on
    validation changed no decision, that this CPU runs natively and that re-runs at most
    ``MAX_RERUN_SHARE`` of the films, or fp32; never chosen by a timing, which two replicas on
    a busy machine measured differently."""
    by_name = {
        name: _with_cascade(_verdict(name, True, 900.0), changed, gain, *rest)
        for name, changed, gain, *rest in cascades
    }
    assert chosen_cascade(by_name) == expected


def test_refusals_say_why():
    from pneumo.inference.guard import MAX_RERUN_SHARE

    c = _with_cascade(_verdict("bf16", True, 900.0), 3, 1.9, MAX_RERUN_SHARE + 0.01, False).cascade
    assert not c.passed and len(c.reasons) == 3
    assert "3 validation decisions changed" in c.reasons[0]
    assert "no native bf16" in c.reasons[1] and "re-run at fp32 (limit 25%)" in c.reasons[2]


def test_this_cpus_native_precisions_come_from_openvino(monkeypatch):
    """Read from OpenVINO's own list of this CPU's capabilities, not guessed from a timing."""
    pytest.importorskip("openvino")
    import openvino as ov

    from pneumo.inference.guard import runs_natively

    listed = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert runs_natively("fp32") and runs_natively("bf16") == ("BF16" in listed)
    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, key: ["FP32", "INT8"])
    assert not runs_natively("bf16") and runs_natively("int8")

    def unknown(self, device, key):
        raise RuntimeError("property not supported")

    monkeypatch.setattr(ov.Core, "get_property", unknown)  # an OpenVINO that cannot say
    assert not runs_natively("bf16") and runs_natively("fp32")


def test_a_cached_report_naming_a_refused_precision_serves_fp32(tiny_model, tmp_path, monkeypatch):
    """A report (edited by hand, or damaged) that names a precision its own verdict refused:
    ``auto`` must not serve it."""
    pytest.importorskip("openvino")
    from pneumo.inference.engine import load_predictor

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    refused = _verdict("bf16", False, 900.0)
    report = GuardReport("bf16", "validation (4 films)", 4, 1.0, 100.0, {}, {"bf16": refused})
    _write_json(guard_path(tiny_model), report.to_dict())
    assert load_predictor(tiny_model, backend="openvino").precision == "fp32"


def test_a_one_class_validation_set_fails_the_guard(
    tiny_model, guard_inputs, tmp_path, monkeypatch
):
    """ROC-AUC is undefined on films of one class: the guard cannot tell whether bf16 ranks
    like fp32, so it must refuse bf16, not pass it."""
    pytest.importorskip("openvino")
    from pneumo.inference.guard import run_guard

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    val, train = guard_inputs
    normal_only = [r for r in val if r.label == "NORMAL"]
    report = run_guard(tiny_model, normal_only, train, precisions=("bf16",))
    verdict = report.verdicts["bf16"]
    assert not verdict.passed and "one class" in " ".join(verdict.reasons)
    assert report.chosen == "fp32" and report.n == len(normal_only)


def test_a_guard_that_cannot_run_is_said_once_and_plainly(
    tiny_model, tmp_path, monkeypatch, caplog
):
    """Every `predict` (and each `serve` process) asks for the precision: the reason the guard
    cannot run is told the first time, in one plain sentence, then no more."""
    pytest.importorskip("openvino")
    import logging

    from pneumo.inference.guard import guarded_precision

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    told = []
    for _ in range(3):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pneumo.inference.guard"):
            assert guarded_precision(tiny_model) == "fp32"
        told.append([r.getMessage() for r in caplog.records if r.levelno >= logging.INFO])
    assert len(told[0]) == 1 and told[1:] == [[], []]
    line = told[0][0]
    assert "cannot run" in line and "lists no validation films" in line
    depth, deepest = 0, 0
    for char in line:
        depth += {"(": 1, ")": -1}.get(char, 0)
        deepest = max(deepest, depth)
    assert deepest <= 1, f"nested brackets: {line}"


@pytest.mark.slow
def test_int8_calibration_keeps_nncf_quiet(tiny_model, guard_inputs, tmp_path, monkeypatch, capfd):
    """`pneumo models --check` calibrates int8 in a child process: NNCF's INFO lines about
    ignored nodes must not flood the terminal."""
    pytest.importorskip("nncf")
    from pneumo.inference.quantize import ensure_int8_ir

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    _, train = guard_inputs
    assert ensure_int8_ir(tiny_model, train).is_file()
    out, err = capfd.readouterr()
    assert "calibrating int8" in err
    assert "INFO:nncf" not in out + err and "No CUDA runtime" not in out + err
