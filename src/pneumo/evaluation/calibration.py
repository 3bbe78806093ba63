"""Temperature scaling (Guo et al. 2017): one scalar T divides the logits so that the softmax
probabilities match observed frequencies on validation, without changing any ranking (so ROC
AUC and the order of images are untouched; only the threshold's meaning in p changes)."""

from __future__ import annotations

import numpy as np

from pneumo.evaluation.metrics import check_arrays
from pneumo.models.outputs import temperature_softmax

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
"""Search bounds for T; a fit that lands on one of them says the logits carry no signal."""


def _check_logits(logits, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with N >= 1 and C >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinity")
    if labels is None:
        return z, None
    y = np.asarray(labels)
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels has shape {y.shape}, expected ({z.shape[0]},)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {z.shape[1] - 1}]")
    return z, y.astype(np.int64)


def negative_log_likelihood(
    logits, labels, temperature: float = 1.0, *, balanced: bool = False
) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against ``labels``; with
    ``balanced`` each class weighs the same in the mean, whatever its count."""
    from scipy.special import log_softmax

    z, y = _check_logits(logits, labels)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = log_softmax(z / temperature, axis=1)
    nll = -logp[np.arange(y.size), y]
    if not balanced:
        return float(nll.mean())
    return float(np.mean([nll[y == c].mean() for c in np.unique(y)]))


def fit_temperature(
    logits, labels, *, balanced: bool = False, min_temperature: float = MIN_TEMPERATURE
) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    Searched over log T (bounded to [``min_temperature``, 20]) because NLL is smooth and
    unimodal there; over-confident models get T > 1, under-confident ones T < 1. A model trained
    class-balanced is fitted with ``balanced`` NLL, so its p stays the posterior at 50%.
    ``min_temperature=1`` may soften, never sharpen: on few, well separated films the fit
    otherwise drives T towards 0 and every p to 0 or 1.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check_logits(logits, labels)
    if not MIN_TEMPERATURE <= min_temperature < MAX_TEMPERATURE:
        raise ValueError(
            f"min_temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}), "
            f"got {min_temperature}"
        )
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z, y, float(np.exp(log_t)), balanced=balanced),
        bounds=(np.log(min_temperature), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


MAX_SHIFT = 20.0
"""Bound of the logit shift; a fit at the bound says validation has a single class in effect."""


def shifted_logits(logits, shift: float) -> np.ndarray:
    """``logits`` with the PNEUMONIA-vs-NORMAL difference lowered by ``shift`` (half from each
    column), as folding the shift into the head's bias gives."""
    z, _ = _check_logits(logits)
    return z + np.array([shift / 2, -shift / 2])


def fit_shift_and_temperature(
    logits, labels, *, balanced: bool = True, min_temperature: float = 1.0
) -> tuple[float, float]:
    """Platt scaling of a two-class network: the shift s and temperature T that minimise the NLL
    of ``sigmoid((z1 - z0 - s) / T)``, with T >= ``min_temperature``.

    Why a shift as well as T: a network fine-tuned with batch statistics is served with running
    ones on clean films, and its p lands off the posterior it was trained for (zero-head,
    trained-BN Lite0 runs called 15% of validation pneumonia NORMAL at p = 0.5, specificity
    100%). T alone cannot move p = 0.5; the shift does, without changing any ranking.
    """
    from scipy.optimize import minimize

    z, y = _check_logits(logits, labels)
    if z.shape[1] != 2:
        raise ValueError(f"a shift needs two-class logits, got {z.shape[1]} classes")
    lo = float(np.log(max(min_temperature, MIN_TEMPERATURE)))

    def loss(params: np.ndarray) -> float:
        shift, log_t = params
        return negative_log_likelihood(
            shifted_logits(z, shift), y, float(np.exp(log_t)), balanced=balanced
        )

    start = np.array([0.0, max(lo, 0.0)])
    result = minimize(
        loss,
        start,
        method="L-BFGS-B",
        bounds=[(-MAX_SHIFT, MAX_SHIFT), (lo, float(np.log(MAX_TEMPERATURE)))],
    )
    shift, log_t = (float(v) for v in result.x)
    return shift, float(np.exp(log_t))


def calibrated_probabilities(logits, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)``, shape (N, C); column 1 is P(PNEUMONIA)."""
    z, _ = _check_logits(logits)
    return temperature_softmax(z, temperature)


def expected_calibration_error(y_true, p, n_bins: int = 10) -> float:
    """ECE of P(PNEUMONIA): the image-weighted mean gap between mean ``p`` and the observed
    pneumonia rate over ``n_bins`` equal-width bins."""

    y, prob = check_arrays(y_true, p)
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    gap = 0.0
    for b in np.unique(bins):
        mask = bins == b
        gap += mask.sum() * abs(prob[mask].mean() - y[mask].mean())
    return float(gap / y.size)
