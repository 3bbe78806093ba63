"""`pneumo models`: what runs here and the guard figures behind the precision."""

from __future__ import annotations

import pytest

from pneumo.cli import main


def test_models_shows_the_guard_figures_and_the_refusal(tiny_model, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    from pneumo.inference.guard import GuardLimits, GuardReport, Verdict, _write_json, guard_path

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    assert main(["models", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    assert "test_efficientnet, 64x64" in out and "guard, which cannot run here" in out
    refused = Verdict("bf16", 0.93, 0.01, 7, 0.07, 3, 0.4, False, ["7 decisions flipped (7.00%)"])
    report = GuardReport(
        "fp32", "validation (100 films)", 100, 0.94, 90.0, vars(GuardLimits()), {"bf16": refused}
    )
    _write_json(guard_path(tiny_model), report.to_dict())
    assert main(["models", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    assert "openvino fp32" in out and "validation (100 films)" in out
    bf16_line = next(line for line in out.splitlines() if line.strip().startswith("bf16"))
    assert "7 (7.00%)" in bf16_line and "refused: 7 decisions flipped" in bf16_line


def test_check_without_validation_data_says_why(tiny_model, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    assert main(["models", "--check", str(tiny_model)]) == 0
    assert "the model lists no validation films" in capsys.readouterr().out


def test_models_says_why_the_guard_cannot_run_before_and_after_use(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """The tiny model lists no validation films: the guard can never run for it, so `models`
    must not promise that it "runs on first use", neither before nor after a use."""
    pytest.importorskip("openvino")
    from pneumo.inference.engine import load_predictor

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    for _ in range(2):
        assert main(["models", str(tiny_model)]) == 0
        out = capsys.readouterr().out
        assert "first use" not in out
        assert (
            "openvino fp32" in out and "cannot run here: the model lists no validation films" in out
        )
        assert load_predictor(tiny_model, backend="openvino").precision == "fp32"


def test_models_before_first_use_says_the_guard_will_run(tmp_path, monkeypatch, capsys):
    """With its validation films found, a model not yet used here gets the promise."""
    pytest.importorskip("openvino")
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    from pneumo.inference.guard import guard_obstacle

    if guard_obstacle(BUNDLED_MODEL_DIR) is not None:
        pytest.skip("the bundled model's validation films are not here (set PNEUMO_DATA)")
    assert main(["models", str(BUNDLED_MODEL_DIR)]) == 0
    assert "not run yet: it runs on first use" in capsys.readouterr().out
