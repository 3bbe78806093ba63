"""A film flagged out of distribution carries no diagnosis anywhere `pneumo predict` writes:
no class, no probability, no confidence, the reason instead (issue 18)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pneumo.cli import main
from synthetic import colour_photo


def test_an_ood_film_has_no_label_and_no_probability(onnx_predictor):
    (pred,) = onnx_predictor.predict_images([colour_photo()], ["cat.png"])
    assert pred.ood and pred.error is None
    assert (pred.label, pred.probability, pred.confidence) == (None, None, None)
    assert not pred.uncertain and "colour" in pred.ood_reason
    assert "probability" not in {k for k, v in pred.to_dict().items() if v is not None}


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predict_output_shows_no_diagnosis_for_an_ood_film(
    tiny_model, xray_files, tmp_path, suffix
):
    cat = tmp_path / "chelsea_cat.png"
    colour_photo().save(cat)
    out = tmp_path / f"out{suffix}"
    args = ["predict", str(xray_files[0]), str(cat), "--model", str(tiny_model)]
    assert main([*args, "--backend", "onnx", "--output", str(out), "--no-progress"]) == 0
    if suffix == ".csv":
        with open(out, newline="") as f:
            film, flagged = csv.DictReader(f)
        empty = ""
    else:
        film, flagged = json.loads(out.read_text())
        empty = None
    assert Path(flagged["path"]).name == "chelsea_cat.png"
    assert str(flagged["ood"]) == "True" and flagged["error"] in ("", None)
    for column in ("class", "probability", "confidence", "uncertain"):
        assert flagged[column] == empty, column
    assert film["class"] in ("NORMAL", "PNEUMONIA") and film.get("ood_reason") in ("", None)
    assert flagged["ood_reason"].startswith("not assessed: a colour image")
