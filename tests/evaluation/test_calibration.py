"""Temperature scaling: fits a known temperature and makes over-confident logits honest."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.evaluation.calibration import (
    calibrated_probabilities,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _sample(true_temperature: float, n: int = 20000, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, 2))
    probs = calibrated_probabilities(logits, true_temperature)
    labels = (rng.random(n) < probs[:, 1]).astype(int)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_recovers_a_known_temperature(true_temperature):
    logits, labels = _sample(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.08)


def test_scaling_reduces_nll_and_calibration_error_of_overconfident_logits():
    logits, labels = _sample(3.0, seed=1)  # logits three times too confident
    t = fit_temperature(logits, labels)
    assert t > 2
    assert negative_log_likelihood(logits, labels, t) < 0.9 * negative_log_likelihood(
        logits, labels
    )
    before = expected_calibration_error(labels, calibrated_probabilities(logits, 1.0)[:, 1])
    after = expected_calibration_error(labels, calibrated_probabilities(logits, t)[:, 1])
    assert after < before / 3


def test_scaling_keeps_the_ranking():
    logits, _ = _sample(1.0, n=200)
    p1 = calibrated_probabilities(logits, 1.0)[:, 1]
    p3 = calibrated_probabilities(logits, 3.0)[:, 1]
    assert (np.argsort(p1) == np.argsort(p3)).all()
    assert np.allclose(calibrated_probabilities(logits, 3.0).sum(axis=1), 1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(np.zeros(5), np.zeros(5, int))
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="temperature"):
        calibrated_probabilities(np.zeros((2, 2)), 0.0)
