"""The decision is taken at the model's own operating point, not at p = 0.5: the bundled
model's threshold (placed on validation for 97% sensitivity) is 0.405, so a film at p = 0.45 is
PNEUMONIA. A predictor that fell back to 0.5 would quietly miss those children."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest


def _with_operating_point(predictor, threshold: float, band: tuple[float, float]):
    """The same network with another threshold and band, and no OOD statistics (the logits
    below are made up, so only the decision rule is under test)."""
    other = copy.copy(predictor)
    other.metadata = replace(predictor.metadata, threshold=threshold, uncertain_band=band)
    other.ood_tensors = {}
    return other


@pytest.mark.parametrize(
    ("threshold", "band"), [(0.405, (0.15, 0.73)), (0.2, (0.1, 0.3)), (0.8, (0.7, 0.9))]
)
def test_labels_and_band_follow_the_models_operating_point(onnx_predictor, threshold, band):
    predictor = _with_operating_point(onnx_predictor, threshold, band)
    temperature = predictor.metadata.temperature
    probs = np.array([0.05, 0.12, 0.19, 0.25, 0.35, 0.45, 0.5, 0.6, 0.72, 0.75, 0.85, 0.95])
    # two-class logits whose temperature softmax gives exactly these probabilities
    logits = np.stack([np.zeros_like(probs), np.log(probs / (1 - probs)) * temperature], axis=1)
    features = np.zeros((len(probs), 8), dtype=np.float32)
    preds = predictor.postprocess(logits, features, [f"f{i}" for i in range(len(probs))])
    lo, hi = band
    for p, pred in zip(probs, preds, strict=True):
        assert pred.probability == pytest.approx(p, abs=1e-9)
        want = "PNEUMONIA" if p >= threshold else "NORMAL"
        assert pred.label == want, f"p = {p} at threshold {threshold}"
        assert pred.threshold == threshold
        assert pred.uncertain == (lo <= p <= hi)
        assert pred.confidence == pytest.approx(p if want == "PNEUMONIA" else 1 - p)
    # both sides of every threshold are exercised
    assert {pred.label for pred in preds} == {"NORMAL", "PNEUMONIA"}
