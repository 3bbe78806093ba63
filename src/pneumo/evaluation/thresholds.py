"""Choosing the operating threshold on validation probabilities.

Why not the argmax of balanced accuracy over ``roc_curve`` thresholds: validation on this data set
is nearly separable, so a wide range of thresholds reach the same (maximal) balanced accuracy, and
the argmax returns the first of them, the lowest one (about p = 0.2 in practice). That threshold
sits right on top of the highest-scoring NORMAL images; on the shifted official test split it cost
15 points of specificity. Here every threshold whose balanced accuracy is within ``tolerance`` of
the maximum forms a plateau, and the threshold returned is the middle of the plateau in logit
space: the largest margin on both sides, measured in the units the model computes in
(a gap between p = 0.2 and p = 0.999 is mostly above p = 0.9 in probability, but not in logits).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pneumo.errors import DataError
from pneumo.evaluation.metrics import check_arrays

EPS = 1e-7
"""Probabilities are clipped to [EPS, 1 - EPS] before taking logits (fp32 softmax saturates)."""

Method = Literal["balanced_accuracy", "sensitivity"]


def _logit(p):
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


def _cuts(y: np.ndarray, p: np.ndarray):
    """Distinct scores ``s`` ascending and, for cut j (PNEUMONIA iff p >= s[j]; j = len(s) means
    nothing is PNEUMONIA), the sensitivity and specificity on (y, p)."""
    scores = np.unique(p)
    # pneumonia / normal counts at or above each distinct score
    idx = np.searchsorted(scores, p)
    pos_at = np.bincount(idx[y == 1], minlength=scores.size)
    neg_at = np.bincount(idx[y == 0], minlength=scores.size)
    pos_ge = np.r_[np.cumsum(pos_at[::-1])[::-1], 0]
    neg_ge = np.r_[np.cumsum(neg_at[::-1])[::-1], 0]
    sensitivity = pos_ge / pos_at.sum()
    specificity = 1 - neg_ge / neg_at.sum()
    return scores, sensitivity, specificity


def bayes_threshold(trained_at: float = 0.5, prevalence: float | None = None) -> float:
    """The threshold on p that minimises expected errors at ``prevalence`` for a model whose p is
    the posterior at prevalence ``trained_at`` (0.5 for a class-balanced model), by Bayes' rule:
    call PNEUMONIA when logit(p) >= logit(trained_at) - logit(prevalence). Without a prevalence,
    the threshold balances the two kinds of error (p = ``trained_at``).

    Why a rule and not a fit: validation carved from train is nearly separable, so any threshold
    fitted on it falls wherever the gap between its classes happens to be (0.27 to 0.70 across
    four near-identical runs), and does not carry to new films.
    """
    for name, value in (("trained_at", trained_at), ("prevalence", prevalence)):
        if value is not None and not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    shift = 0.0 if prevalence is None else float(_logit(prevalence))
    return _sigmoid(float(_logit(trained_at)) - shift)


def choose_threshold(
    y_true,
    p,
    *,
    method: Method = "balanced_accuracy",
    target_sensitivity: float = 0.95,
    tolerance: float = 0.005,
) -> float:
    """Operating threshold on P(PNEUMONIA) chosen on validation ``(y_true, p)``, in (0, 1).

    ``balanced_accuracy``: the middle, in logit space, of the contiguous plateau of thresholds
    whose balanced accuracy is within ``tolerance`` of the best (see the module docstring).
    ``sensitivity``: the highest threshold whose validation sensitivity still reaches
    ``target_sensitivity`` (the specificity is then the best one can have at that sensitivity).
    """
    y, prob = check_arrays(y_true, p)
    if not (y == 0).any() or not (y == 1).any():
        raise DataError(
            "choosing a threshold needs NORMAL and PNEUMONIA images in the validation data, "
            f"got {int((y == 0).sum())} NORMAL and {int((y == 1).sum())} PNEUMONIA"
        )
    scores, sensitivity, specificity = _cuts(y, prob)
    if method == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
        # Sensitivity falls as the cut rises; the last cut still at target is the highest.
        reaching = np.flatnonzero(sensitivity[:-1] >= target_sensitivity - 1e-12)
        threshold = float(scores[reaching[-1]])
        return float(np.clip(threshold, EPS, 1 - EPS))
    if method != "balanced_accuracy":
        raise ValueError(f"unknown method {method!r}; choose 'balanced_accuracy' or 'sensitivity'")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")

    balanced = (sensitivity + specificity) / 2
    best = int(np.argmax(balanced))
    on_plateau = balanced >= balanced[best] - tolerance - 1e-12
    lo = best
    while lo > 0 and on_plateau[lo - 1]:
        lo -= 1
    hi = best
    while hi + 1 < balanced.size and on_plateau[hi + 1]:
        hi += 1
    # Cuts lo..hi share (nearly) the best balanced accuracy; any threshold in
    # (scores[lo - 1], scores[hi]] gives one of them. Beyond the data use the clip bounds.
    lower = _logit(scores[lo - 1]) if lo > 0 else _logit(EPS)
    upper = _logit(scores[hi]) if hi < scores.size else _logit(1 - EPS)
    threshold = _sigmoid((lower + upper) / 2)
    return float(np.clip(threshold, EPS, 1 - EPS))
