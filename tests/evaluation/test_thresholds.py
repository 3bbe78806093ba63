"""Threshold choice: the middle of the balanced-accuracy plateau, not its lowest edge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score

from pneumo.errors import DataError
from pneumo.evaluation.thresholds import choose_threshold


def _logit(p):
    return np.log(p / (1 - p))


def _separable(rng, n_neg=100, n_pos=300, neg_max=0.2, pos_min=0.9):
    """Validation like this data set's: NORMAL below ``neg_max``, PNEUMONIA above ``pos_min``."""
    neg = np.r_[rng.uniform(0.001, neg_max, n_neg - 1), neg_max]
    pos = np.r_[pos_min, rng.uniform(pos_min, 0.9999, n_pos - 1)]
    return np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)], np.r_[neg, pos]


def test_separable_validation_gives_the_logit_midpoint_of_the_gap():
    y, p = _separable(np.random.default_rng(0))
    t = choose_threshold(y, p, tolerance=0.0)
    # every threshold in (0.2, 0.9] separates perfectly; the middle in logit space is 0.6
    assert t == pytest.approx(0.6, abs=1e-9)
    assert balanced_accuracy_score(y, p >= t) == 1.0
    assert _logit(t) - _logit(0.2) == pytest.approx(_logit(0.9) - _logit(t))


def test_plateau_middle_is_far_from_the_edges_naive_argmax_returns():
    from sklearn.metrics import roc_curve

    y, p = _separable(np.random.default_rng(1), neg_max=0.05, pos_min=0.95)
    fpr, tpr, thresholds = roc_curve(y, p)
    naive = thresholds[np.argmax(tpr - fpr)]
    assert naive == pytest.approx(0.95)  # an edge of the plateau: one image away from an error
    assert choose_threshold(y, p, tolerance=0.0) == pytest.approx(0.5)
    # the default tolerance admits a few of the lowest PNEUMONIA scores: still near the middle
    assert choose_threshold(y, p) == pytest.approx(0.5, abs=0.01)


def test_tolerance_lets_a_near_tie_widen_the_plateau():
    # one NORMAL outlier at 0.85 among 1000: thresholds above it are better by 0.05% only
    rng = np.random.default_rng(2)
    y, p = _separable(rng, n_neg=1000, n_pos=1000, neg_max=0.1, pos_min=0.95)
    p[0] = 0.85
    strict = choose_threshold(y, p, tolerance=0.0)
    tolerant = choose_threshold(y, p)
    assert 0.85 < strict < 0.95  # squeezed between the outlier and the lowest PNEUMONIA
    assert 0.1 < tolerant < 0.85  # the plateau spans the outlier: its middle ignores it
    assert (
        balanced_accuracy_score(y, p >= tolerant) >= balanced_accuracy_score(y, p >= strict) - 0.005
    )


def test_sensitivity_method_gives_the_highest_threshold_reaching_the_target():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    p = np.r_[rng.uniform(0, 0.7, 200), rng.uniform(0.3, 1, 200)]
    t = choose_threshold(y, p, method="sensitivity", target_sensitivity=0.95)
    assert recall_score(y, p >= t) >= 0.95
    # any higher validation score as threshold drops below the target
    higher = np.sort(p[p > t])[0]
    assert recall_score(y, p >= higher) < 0.95


def test_result_is_strictly_inside_zero_one_even_for_saturated_probabilities():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.0, 1.0, 1.0])  # fp32 softmax saturates like this
    for method in ("balanced_accuracy", "sensitivity"):
        t = choose_threshold(y, p, method=method)
        assert 0 < t < 1
        assert balanced_accuracy_score(y, p >= t) == 1.0


def test_one_class_validation_is_a_clear_error():
    with pytest.raises(DataError, match="NORMAL and PNEUMONIA"):
        choose_threshold([1, 1, 1], [0.2, 0.6, 0.9])
    with pytest.raises(ValueError, match="unknown method"):
        choose_threshold([0, 1], [0.2, 0.6], method="youden")


def test_bayes_threshold_balances_errors_and_follows_prevalence():
    from pneumo.evaluation.thresholds import bayes_threshold

    assert bayes_threshold() == pytest.approx(0.5)
    # At 74% pneumonia, fewer errors overall come from calling pneumonia from p = 0.26 up.
    assert bayes_threshold(0.5, 0.74) == pytest.approx(0.26)
    # A model trained without balancing already carries the training prevalence.
    assert bayes_threshold(0.74, None) == pytest.approx(0.74)
    assert bayes_threshold(0.74, 0.74) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="prevalence"):
        bayes_threshold(0.5, 1.0)
