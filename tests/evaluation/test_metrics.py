"""Metric values on hand-made arrays, the always-PNEUMONIA baseline and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.evaluation.metrics import (
    RATE_METRICS,
    baseline_metrics,
    bootstrap_intervals,
    compute_metrics,
    replicate_metrics,
    resample_weights,
)


def test_metrics_on_a_hand_counted_example():
    # 4 NORMAL (one false alarm), 6 PNEUMONIA (one missed)
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99]
    m = compute_metrics(y, p, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]
    assert (m["n"], m["n_normal"], m["n_pneumonia"]) == (10, 4, 6)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert m["precision"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(5 / 6)
    # 24 pairs, the 0.7 NORMAL outranks the 0.4 and 0.6 PNEUMONIA: 22/24
    assert m["roc_auc"] == pytest.approx(22 / 24)


def test_threshold_is_inclusive():
    m = compute_metrics([0, 1], [0.5, 0.5], 0.5)
    assert m["confusion_matrix"] == [[0, 1], [0, 1]]


def test_always_pneumonia_baseline_scores_the_prevalence():
    # the official train split's proportions: 1341 NORMAL, 3875 PNEUMONIA
    y = np.r_[np.zeros(1341, int), np.ones(3875, int)]
    base = baseline_metrics(y)
    assert base["accuracy"] == pytest.approx(3875 / 5216)
    assert round(100 * base["accuracy"], 2) == 74.29
    assert base["balanced_accuracy"] == 0.5
    assert base["sensitivity"] == 1.0 and base["specificity"] == 0.0
    assert base["roc_auc"] == 0.5
    assert base["confusion_matrix"] == [[0, 1341], [0, 3875]]


def test_one_class_leaves_undefined_metrics_empty_not_wrong():
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.8], 0.5)
    assert m["roc_auc"] is None and m["specificity"] is None
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2], [0.1, 0.2], "0 \\(NORMAL\\) or 1"),
        ([0, 1], [0.1], "shape"),
        ([0, 1], [0.1, 1.5], "\\[0, 1\\]"),
        ([], [], "non-empty"),
    ],
)
def test_bad_arrays_are_named(y, p, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y, p, 0.5)


def _noisy(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounding makes ties
    return y, p


def test_vectorised_replicates_equal_metrics_on_the_expanded_resample():
    y, p = _noisy()
    weights = resample_weights(y.size, groups=np.arange(y.size) // 4, n_boot=6, seed=3)
    fast = replicate_metrics(y, p, 0.5, weights)
    for b in range(weights.shape[0]):
        idx = np.repeat(np.arange(y.size), weights[b])
        slow = compute_metrics(y[idx], p[idx], 0.5)
        for key in RATE_METRICS:
            assert fast[key][b] == pytest.approx(slow[key]), key
        assert fast["roc_auc"][b] == pytest.approx(roc_auc_score(y[idx], p[idx]))


def test_intervals_contain_the_point_estimate_and_are_reproducible():
    y, p = _noisy()
    point = compute_metrics(y, p, 0.5)
    ci = bootstrap_intervals(y, p, 0.5, n_boot=500, seed=1)
    assert set(ci) == set(RATE_METRICS)
    for key in RATE_METRICS:
        lo, hi = ci[key]
        assert 0 <= lo < point[key] < hi <= 1, key
        assert hi - lo < 0.2, key  # 400 images pin the figures to a few points
    assert bootstrap_intervals(y, p, 0.5, n_boot=500, seed=1) == ci


def test_group_resampling_draws_whole_patients():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    weights = resample_weights(6, groups=groups, n_boot=200, seed=0)
    # every image of a patient is drawn the same number of times
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # three patients drawn per replicate
    assert (weights[:, [0, 3, 4]].sum(axis=1) == 3).all()


def test_patient_resampling_widens_intervals_when_images_of_a_patient_agree():
    # 40 patients with 10 images each; all images of a patient get the same outcome, so the
    # information is that of 40 cases, not 400 images
    rng = np.random.default_rng(0)
    patient_y = rng.integers(0, 2, 40)
    patient_correct = rng.random(40) < 0.8
    patient_p = np.where(patient_correct, 0.3 + 0.4 * patient_y, 0.7 - 0.4 * patient_y)
    groups = np.repeat(np.arange(40), 10)
    y, p = patient_y[groups], patient_p[groups]
    by_image = bootstrap_intervals(y, p, 0.5, n_boot=400, seed=0)["accuracy"]
    by_patient = bootstrap_intervals(y, p, 0.5, groups=groups, n_boot=400, seed=0)["accuracy"]
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])


def test_groups_must_match_the_images():
    with pytest.raises(ValueError, match="groups"):
        bootstrap_intervals([0, 1], [0.1, 0.9], 0.5, groups=["a"], n_boot=10)
