"""`pneumo adapt` on labeled films: the temperature never sharpens, a threshold it cannot place
honestly on few films is refused, and a missing folder is named as such (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumo.cli import main
from pneumo.errors import DataError
from pneumo.evaluation.calibration import calibrated_probabilities
from pneumo.training.adapt import THRESHOLD_RANGE, labeled_operating_point

SITE = Path("site")


def _logits(margins: np.ndarray) -> np.ndarray:
    """Two-class logits whose PNEUMONIA-minus-NORMAL difference is ``margins``."""
    return np.stack([-margins / 2, margins / 2], axis=1)


def _labels() -> np.ndarray:
    return np.array([0] * 20 + [1] * 20)


def test_few_well_separated_films_do_not_sharpen_the_model():
    # 20 + 20 films, every one on the right side by a small margin: an unbounded fit takes
    # T to its floor (0.05) and every p to 0 or 1, and the threshold to 0.99998.
    y = _labels()
    rng = np.random.default_rng(0)
    margins = np.where(y == 1, 1.0, -1.0) * rng.uniform(0.3, 0.8, y.size)
    temperature, threshold, _ = labeled_operating_point(_logits(margins), y, 0.95, SITE)
    p = calibrated_probabilities(_logits(margins), temperature)[:, 1]
    assert temperature >= 1.0
    assert THRESHOLD_RANGE[0] < threshold < THRESHOLD_RANGE[1]
    assert p.min() < threshold < p.max()
    assert np.all(p[y == 1] >= threshold)  # the goal (every positive on 20 films) is kept


def test_a_threshold_at_the_extreme_of_the_scores_is_refused():
    y = _labels()
    margins = np.where(y == 1, 1.0, -1.0) * np.linspace(0.5, 2.0, y.size)
    margins[20] = -5.0  # one PNEUMONIA film scores below every NORMAL one
    with pytest.raises(DataError, match="cannot place a threshold honestly on 40 labeled films"):
        labeled_operating_point(_logits(margins), y, 0.95, SITE)


def test_a_threshold_outside_the_honest_range_is_refused():
    y = _labels()
    margins = np.where(y == 1, 40.0, -40.0) + np.linspace(0, 1, y.size)  # p is 0 or 1
    with pytest.raises(DataError, match=r"outside \(0.001, 0.999\)"):
        labeled_operating_point(_logits(margins), y, 0.95, SITE)


def test_adapt_on_a_missing_folder_says_so(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    code = main(["adapt", "--images", str(missing), "--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}: no such folder"
    assert not (tmp_path / "out").exists()
