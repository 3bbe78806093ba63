"""The operating point a run ships: temperature, threshold and uncertain band."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.config import TrainConfig
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


def test_a_near_separable_validation_never_sharpens_the_model():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100, int), np.ones(300, int)]
    margin = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 0.2, y.size)  # perfectly separated
    logits = np.stack([-margin, margin], axis=1)
    selection = calibrate_and_select(TrainConfig(), logits, y, y)
    # NLL alone would pick T far below 1 here; the shipped model keeps T = 1.
    assert selection.temperature == 1.0
    assert selection.threshold == pytest.approx(0.5)
    noisy = np.stack([-margin * 8, margin * 8], axis=1) + rng.normal(0, 6, (y.size, 2))
    assert calibrate_and_select(TrainConfig(), noisy, y, y).temperature > 1.0
