"""Classification metrics at an operating threshold, percentile bootstrap intervals (by patient
when patients are known) and the always-PNEUMONIA baseline every figure should be read against.

Labels follow ``pneumo.CLASS_NAMES``: 0 is NORMAL, 1 is PNEUMONIA (the positive class); ``p`` is
the calibrated probability of PNEUMONIA and an image is called PNEUMONIA iff ``p >= threshold``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

RATE_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
)
"""The fractions reported with a 95% interval, in report order."""


@dataclass(frozen=True)
class Metrics:
    """Figures of the rule ``PNEUMONIA iff p >= threshold`` on labelled films, as evaluation
    reports, ``model.json``, the API and the model card carry them (``to_dict``)."""

    n: int
    n_normal: int
    n_pneumonia: int
    accuracy: float
    balanced_accuracy: float
    sensitivity: float | None
    """None without PNEUMONIA films."""
    specificity: float | None
    """None without NORMAL films."""
    precision: float
    """0 when nothing is called PNEUMONIA."""
    f1: float
    roc_auc: float | None
    """None when only one class is present."""
    confusion_matrix: list[list[int]]
    """``[[tn, fp], [fn, tp]]``."""

    def to_dict(self) -> dict:
        """The JSON form, keys in report order (what model.json and reports hold)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> Metrics:
        """The figures of a JSON object that holds them among others (a model.json's
        ``metrics`` section also holds intervals and margins)."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def __getitem__(self, name: str):
        """A figure by name, for code that walks ``RATE_METRICS``."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


def check_arrays(y_true, p=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate labels (0/1, non-empty) and probabilities (same length, finite, in [0, 1])."""
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0 (NORMAL) or 1 (PNEUMONIA), got {np.unique(y)[:5]}")
    y = y.astype(np.int64)
    if p is None:
        return y, None
    prob = np.asarray(p, dtype=np.float64)
    if prob.shape != y.shape:
        raise ValueError(f"p has shape {prob.shape} but y_true has shape {y.shape}")
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError("p must be finite probabilities in [0, 1]")
    return y, prob


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return threshold


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _rates(tn, fp, fn, tp):
    """Rates from confusion counts (scalars or arrays); NaN where a rate is undefined."""
    tn, fp, fn, tp = (np.asarray(v, dtype=np.float64) for v in (tn, fp, fn, tp))
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = tp / (tp + fn)
        specificity = tn / (tn + fp)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        accuracy = (tp + tn) / (tn + fp + fn + tp)
        # Balanced accuracy over the classes present (sklearn's definition).
        balanced = np.nanmean(np.stack([sensitivity, specificity]), axis=0)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": precision,
        "f1": f1,
    }


def roc_auc(y_true, score) -> float | None:
    """scikit-learn's area under the ROC curve of ``score`` (a probability, a logit or any
    score that ranks PNEUMONIA higher); None when ``y_true`` holds one class only, where it is
    undefined. The one ROC-AUC of pneumo: evaluation, training epochs and adaptation use it."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    if np.unique(y).size < 2:
        return None
    return float(roc_auc_score(y, np.asarray(score)))


def compute_metrics(y_true, p, threshold: float) -> Metrics:
    """Metrics of the rule ``PNEUMONIA iff p >= threshold``.

    Returns counts (``n``, ``n_normal``, ``n_pneumonia``), the fractions in ``RATE_METRICS``
    (``sensitivity`` is None without PNEUMONIA images, ``specificity`` without NORMAL ones,
    ``roc_auc`` when only one class is present; ``precision`` and ``f1`` are 0 when nothing is
    called PNEUMONIA) and ``confusion_matrix`` as ``[[tn, fp], [fn, tp]]``.
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_score

    y, prob = check_arrays(y_true, p)
    threshold = _check_threshold(threshold)
    pred = (prob >= threshold).astype(np.int64)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    present = [v for v in (sensitivity, specificity) if v is not None]
    return Metrics(
        n=int(y.size),
        n_normal=tn + fp,
        n_pneumonia=fn + tp,
        accuracy=(tp + tn) / y.size,
        balanced_accuracy=float(np.mean(present)),
        sensitivity=sensitivity,
        specificity=specificity,
        precision=float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        f1=float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        roc_auc=roc_auc(y, prob),
        confusion_matrix=cm.astype(int).tolist(),
    )


def baseline_metrics(y_true) -> Metrics:
    """Metrics of the classifier that calls every image PNEUMONIA (p = 1 everywhere).

    Its accuracy is the prevalence of pneumonia (74% on the official train split), its balanced
    accuracy 0.5 and its ROC AUC 0.5: any model has to be read against these numbers.
    """
    y, _ = check_arrays(y_true)
    return compute_metrics(y, np.ones(y.shape), 0.5)


def resample_weights(
    n: int,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap replicates as multiplicities, shape (n_boot, n): how often each item is drawn.

    With ``groups``, whole groups (patients) are drawn with replacement and every image of a
    drawn patient gets that patient's multiplicity: images of one patient are correlated, so
    drawing them one by one would make the intervals too narrow.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, n, size=(n_boot, n))
        return np.stack([np.bincount(row, minlength=n) for row in draws])
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}, expected ({n},)")
    _, index = np.unique(groups, return_inverse=True)
    n_groups = int(index.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    group_counts = np.stack([np.bincount(row, minlength=n_groups) for row in draws])
    return group_counts[:, index]


def _weighted_auc(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of every replicate at once (Mann-Whitney with ties counted half); equals
    ``roc_auc_score`` on the expanded resample. NaN where a replicate lacks a class."""
    order = np.argsort(prob, kind="stable")
    sorted_p = prob[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    w = weights[:, order].astype(np.float64)
    pos = np.add.reduceat(w * (y[order] == 1), starts, axis=1)
    neg = np.add.reduceat(w * (y[order] == 0), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def replicate_metrics(y_true, p, threshold: float, weights: np.ndarray) -> dict[str, np.ndarray]:
    """``RATE_METRICS`` for each row of ``weights`` (from ``resample_weights``), vectorised."""
    y, prob = check_arrays(y_true, p)
    pred = prob >= _check_threshold(threshold)
    w = np.asarray(weights, dtype=np.float64)
    tp = w @ ((y == 1) & pred)
    fn = w @ ((y == 1) & ~pred)
    fp = w @ ((y == 0) & pred)
    tn = w @ ((y == 0) & ~pred)
    out = _rates(tn, fp, fn, tp)
    out["roc_auc"] = _weighted_auc(y, prob, w)
    return out


def bootstrap_intervals(
    y_true,
    p,
    threshold: float,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals ``{metric: [lo, hi]}`` for ``RATE_METRICS``.

    ``groups`` (patient ids, one per image) makes the resampling unit the patient. Replicates
    where a metric is undefined (no PNEUMONIA drawn, say) are left out of that metric; a metric
    undefined in every replicate gets None.
    """
    y, prob = check_arrays(y_true, p)
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    weights = resample_weights(y.size, groups=groups, n_boot=n_boot, seed=seed)
    tail = 100 * (1 - level) / 2
    intervals: dict[str, list[float] | None] = {}
    for name, values in replicate_metrics(y, prob, threshold, weights).items():
        values = values[np.isfinite(values)]
        if values.size == 0:
            intervals[name] = None
        else:
            lo, hi = np.percentile(values, [tail, 100 - tail])
            intervals[name] = [float(lo), float(hi)]
    return intervals
