"""The operating point a run ships: temperature, threshold and uncertain band."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.training.config import TrainConfig
from pneumo.training.finalize import calibrate_and_select, uncertain_band


def test_uncertain_band_is_odds_of_four_to_one_around_the_threshold():
    assert uncertain_band(0.5) == pytest.approx((0.2, 0.8))
    low, high = uncertain_band(0.26)
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(0.26) / odds(low) == pytest.approx(4) and odds(high) / odds(0.26) == pytest.approx(
        4
    )
    with pytest.raises(ValueError):
        uncertain_band(0.5, odds=1)


def _logits(margin: np.ndarray) -> np.ndarray:
    return np.stack([-margin / 2, margin / 2], axis=1)


def test_a_near_separable_validation_never_sharpens_the_model():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100, int), np.ones(300, int)]
    margin = np.where(y == 1, 2.0, -2.0) + rng.normal(0, 0.4, y.size)  # perfectly separated
    bayes = TrainConfig(threshold_method="bayes")
    selection = calibrate_and_select(bayes, _logits(margin), y, 0.75)
    # NLL alone would pick T far below 1 here; the shipped model keeps T = 1.
    assert selection.temperature == 1.0
    assert abs(selection.shift) < 0.5  # symmetric classes: nothing to move
    assert selection.threshold == pytest.approx(0.5)
    noisy = _logits(margin * 8) + rng.normal(0, 6, (y.size, 2))
    assert calibrate_and_select(bayes, noisy, y, 0.75).temperature > 1.0


def test_a_model_biased_towards_normal_is_shifted_back_without_changing_its_ranking():
    """Trained-BN fine-tunes call many validation pneumonias NORMAL at p = 0.5; the fitted
    shift moves p back to the class-balanced posterior, and the AUC stays what it was."""
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(300, int), np.ones(900, int)]
    margin = np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1.0, y.size) - 2.0  # biased by -2
    biased_p = 1 / (1 + np.exp(-margin))
    assert ((biased_p >= 0.5)[y == 1]).mean() < 0.5  # most pneumonias called NORMAL at 0.5
    chosen = calibrate_and_select(TrainConfig(threshold_method="bayes"), _logits(margin), y, 0.75)
    assert chosen.shift == pytest.approx(-2.0, abs=0.3)
    assert ((chosen.p >= 0.5)[y == 1]).mean() > 0.85
    assert ((chosen.p < 0.5)[y == 0]).mean() > 0.85
    assert chosen.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, margin))


def test_the_sensitivity_rule_is_the_highest_threshold_reaching_the_target_with_its_margin():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(200, int), np.ones(600, int)]
    margin = np.where(y == 1, 2.0, -2.0) + rng.normal(0, 1.2, y.size)
    cfg = TrainConfig()  # the default rule: 97% sensitivity on validation
    assert (cfg.threshold_method, cfg.target_sensitivity) == ("sensitivity", 0.97)
    chosen = calibrate_and_select(cfg, _logits(margin), y, 0.75)
    p, t = chosen.p, chosen.threshold
    assert (p[y == 1] >= t).mean() >= 0.97
    # any higher threshold (the next pneumonia score up) falls below the target
    above = np.sort(p[y == 1][p[y == 1] > t])[0]
    assert (p[y == 1] >= above).mean() < 0.97
    lo, hi = chosen.metrics["sensitivity_ci95"]
    assert lo < chosen.metrics["sensitivity"] < hi and hi - lo < 0.05
    lo, hi = chosen.metrics["specificity_ci95"]
    assert lo < chosen.metrics["specificity"] < hi
    assert chosen.uncertain_band[0] < t < chosen.uncertain_band[1]


def test_the_shift_folded_into_the_head_is_what_serving_computes():
    import torch

    from pneumo.evaluation.calibration import shifted_logits
    from pneumo.models.registry import create_model
    from pneumo.training.finalize import fold_logit_shift

    torch.manual_seed(0)
    model = create_model("test_efficientnet", pretrained=False).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        before = model(x).numpy()
        fold_logit_shift(model, -1.7)
        after = model(x).numpy()
    np.testing.assert_allclose(after, shifted_logits(before, -1.7), atol=1e-5)
    assert np.allclose(np.diff(after, axis=1), np.diff(before, axis=1) + 1.7, atol=1e-5)
