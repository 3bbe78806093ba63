"""Report figures as PNG files. Each function draws on its own Agg-backed Figure (no pyplot
state, no GUI backend, safe from threads), writes ``path`` and returns it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo import CLASS_NAMES
from pneumo.evaluation.metrics import check_arrays

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_training_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Accuracy and loss per epoch, train against validation, from a run's ``history.json``
    (a list of per-epoch dicts; keys that an epoch lacks are simply not drawn)."""
    if not history:
        raise ValueError("history is empty: no epochs to plot")
    fig = _figure(10, 4)
    ax_acc, ax_loss = fig.subplots(1, 2)
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    panels = (
        (
            ax_acc,
            "accuracy",
            (
                ("train_accuracy", "train"),
                ("val_accuracy", "validation"),
                ("val_balanced_accuracy", "validation, balanced"),
            ),
        ),
        (ax_loss, "loss", (("train_loss", "train"), ("val_loss", "validation"))),
    )
    for ax, title, series in panels:
        for key, label in series:
            points = [(e, row[key]) for e, row in zip(epochs, history, strict=True)]
            points = [(e, v) for e, v in points if isinstance(v, int | float)]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]],
    path: str | Path,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str | None = None,
) -> Path:
    """Confusion matrix (rows true class, columns predicted) with counts and row percentages."""
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {len(class_names)} classes")
    fig = _figure(4.8, 4.2)
    ax = fig.subplots()
    display = ConfusionMatrixDisplay(cm, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{cm[i, j]}\n{100 * share[i, j]:.1f}%")
    ax.set_title(title or "Confusion matrix (row %)")
    return _save(fig, path)


def plot_roc(y_true, p, threshold: float, path: str | Path) -> Path:
    """ROC curve with its AUC, the chance line, and the operating point at ``threshold``."""
    from sklearn.metrics import RocCurveDisplay

    y, prob = check_arrays(y_true, p)
    if y.min() == y.max():
        raise ValueError("a ROC curve needs NORMAL and PNEUMONIA images")
    fig = _figure(5, 5)
    ax = fig.subplots()
    RocCurveDisplay.from_predictions(y, prob, ax=ax, name="model", plot_chance_level=True)
    pred = prob >= threshold
    sensitivity = pred[y == 1].mean()
    fpr = pred[y == 0].mean()
    ax.plot(
        [fpr],
        [sensitivity],
        "o",
        color="crimson",
        markersize=8,
        label=f"threshold {threshold:.3f}: sens. {sensitivity:.1%}, spec. {1 - fpr:.1%}",
    )
    ax.legend(loc="lower right")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("ROC curve")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(y_true, p, path: str | Path, *, n_bins: int = 10) -> Path:
    """Reliability diagram: observed pneumonia rate against mean predicted probability per bin,
    with the histogram of probabilities below (calibration is only checked where data is)."""
    from sklearn.calibration import CalibrationDisplay

    y, prob = check_arrays(y_true, p)
    fig = _figure(5, 6)
    ax, ax_hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    CalibrationDisplay.from_predictions(y, prob, n_bins=n_bins, ax=ax, name="model")
    ax.set_title("Reliability of P(PNEUMONIA)")
    ax.grid(alpha=0.3)
    ax.set_xlabel("")
    ax.set_ylabel("observed pneumonia rate")
    ax_hist.hist(prob, bins=n_bins, range=(0, 1), color="grey")
    ax_hist.set_xlabel("predicted probability of PNEUMONIA")
    ax_hist.set_ylabel("images")
    return _save(fig, path)
