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
    assert "test_efficientnet, 64x64" in out and "not run yet" in out
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
    assert "records no training data" in capsys.readouterr().out
