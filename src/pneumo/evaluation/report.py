"""The evaluation report: one JSON file for machines, a Markdown file beside it for people (model
against the always-PNEUMONIA baseline, with bootstrap intervals) and the PNG figures it links."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pneumo import CLASS_NAMES, __version__
from pneumo.evaluation import plots as P
from pneumo.evaluation.calibration import expected_calibration_error
from pneumo.evaluation.metrics import (
    RATE_METRICS,
    baseline_metrics,
    bootstrap_intervals,
    check_arrays,
    compute_metrics,
)

log = logging.getLogger(__name__)

ATTRIBUTION = (
    "Data: Kermany, Zhang, Goldbaum (2018), Labeled Optical Coherence Tomography (OCT) and "
    "Chest X-Ray Images for Classification, Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, "
    "licence CC BY 4.0."
)
"""Shown wherever results from the Kermany data set are shown (the licence requires it)."""

DISCLAIMER = "Research use only: not a medical device and not a substitute for a radiologist."

LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity": "sensitivity (pneumonia found)",
    "specificity": "specificity (normal cleared)",
    "precision": "precision (PPV)",
    "f1": "F1",
    "roc_auc": "ROC AUC",
}


def format_value(key: str, value: float | None) -> str:
    """A metric for people: ROC AUC as 0.912, rates as percentages."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if key == "roc_auc" else f"{100 * value:.1f}%"


def format_interval(key: str, ci: list[float] | None, sep: str = " to ") -> str:
    """A 95% interval in the unit of ``format_value``."""
    if ci is None:
        return "n/a"
    if key == "roc_auc":
        return f"{ci[0]:.3f}{sep}{ci[1]:.3f}"
    return f"{100 * ci[0]:.1f}{sep}{100 * ci[1]:.1f}%"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _markdown(report: dict, plots: dict[str, str]) -> str:
    base = report["baseline_always_pneumonia"]
    boot = report["bootstrap"]
    unit = f"{boot['n_units']} patients" if boot["unit"] == "patient" else "images"
    model = report["model"]
    lines = [
        f"# pneumo evaluation: {report['split']}",
        "",
        f"- Images: {report['n']} ({report['n_normal']} NORMAL, {report['n_pneumonia']} "
        f"PNEUMONIA); skipped unreadable: {len(report['skipped'])}",
    ]
    model_bits = [
        f"{k} `{v}`" for k, v in model.items() if isinstance(v, str | int | float) and v != ""
    ]
    if model_bits:
        lines.append("- Model: " + ", ".join(model_bits))
    lines += [
        f"- Rule: PNEUMONIA iff calibrated P(PNEUMONIA) >= {report['threshold']:.4f}",
        f"- 95% intervals: percentile bootstrap, {boot['n_boot']} resamples of {unit}",
    ]
    if report.get("predictions"):
        lines.append(
            f"- Per-image probabilities: [{report['predictions']}]({report['predictions']})"
        )
    lines += [
        "",
        "| metric | model | 95% interval | always PNEUMONIA | 95% interval |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in RATE_METRICS:
        lines.append(
            f"| {LABELS[key]} | {format_value(key, report[key])} "
            f"| {format_interval(key, report['ci95'][key])} "
            f"| {format_value(key, base[key])} | {format_interval(key, base['ci95'][key])} |"
        )
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    lines += [
        "",
        "The always-PNEUMONIA baseline calls every image PNEUMONIA: its accuracy is the share "
        "of pneumonia in this split, which is what a model's accuracy must beat.",
        "",
        "## Confusion matrix",
        "",
        f"| true \\ predicted | {CLASS_NAMES[0]} | {CLASS_NAMES[1]} |",
        "|---|---:|---:|",
        f"| {CLASS_NAMES[0]} | {tn} | {fp} |",
        f"| {CLASS_NAMES[1]} | {fn} | {tp} |",
        "",
    ]
    titles = {
        "confusion_matrix": "Confusion matrix",
        "roc": "ROC curve",
        "reliability": "Calibration",
        "training": "Training curves",
    }
    for key, name in plots.items():
        if key == "reliability":
            cal = report["calibration"]
            lines += [
                f"## {titles[key]}",
                "",
                f"Brier score {_number(cal['brier'])}, expected calibration error "
                f"{_number(cal['ece'])} (10 bins).",
                "",
                f"![{titles[key]}]({name})",
                "",
            ]
        elif key == "confusion_matrix":
            lines += [f"![{titles[key]}]({name})", ""]
        else:
            lines += [f"## {titles[key]}", "", f"![{titles[key]}]({name})", ""]
    if "roc" not in plots:
        lines += ["No ROC curve: this data holds only one class.", ""]
    if report["skipped"]:
        lines += ["## Skipped files", ""]
        lines += [f"- `{item['path']}`: {item['reason']}" for item in report["skipped"]]
        lines.append("")
    lines += ["---", "", report["data"], "", DISCLAIMER, ""]
    return "\n".join(lines)


def write_report(
    output_json: str | Path,
    *,
    y_true,
    p,
    threshold: float,
    groups: Sequence[str] | None = None,
    history: Sequence[dict] | None = None,
    model_info: dict,
    split: str,
    skipped: Sequence[dict] | None = None,
    predictions: Sequence[dict] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Write ``output_json``, a Markdown report with the same stem and the PNG figures beside it.

        ``y_true`` holds 0 (NORMAL) / 1 (PNEUMONIA), ``p`` the calibrated P(PNEUMONIA), ``groups``
        the patient of each image (bootstrap by patient when given), ``history`` the training run's
        per-epoch list (drawn as curves), ``skipped`` the unreadable files as ``{"path", "reason"}``
    and ``predictions`` one dict per image, written as ``STEM_predictions.csv``.
        Returns the report as written to the JSON file.
    """
    from sklearn.metrics import brier_score_loss

    output_json = Path(output_json)
    if output_json.suffix.lower() != ".json":
        raise ValueError(f"{output_json}: the report file must end in .json")
    y, prob = check_arrays(y_true, p)
    if groups is not None and len(groups) != y.size:
        raise ValueError(f"{len(groups)} patient ids for {y.size} images")
    out_dir = output_json.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = output_json.stem

    report: dict = {"split": split, "model": dict(model_info), "threshold": float(threshold)}
    report.update(compute_metrics(y, prob, threshold).to_dict())
    report["ci95"] = bootstrap_intervals(
        y, prob, threshold, groups=groups, n_boot=n_boot, seed=seed
    )
    baseline = baseline_metrics(y).to_dict()
    baseline["ci95"] = bootstrap_intervals(
        y, np.ones(y.shape), 0.5, groups=groups, n_boot=n_boot, seed=seed
    )
    report["baseline_always_pneumonia"] = baseline
    report["calibration"] = {
        "brier": float(brier_score_loss(y, prob, pos_label=1)),
        "ece": expected_calibration_error(y, prob),
    }
    report["bootstrap"] = {
        "n_boot": n_boot,
        "seed": seed,
        "unit": "patient" if groups is not None else "image",
        "n_units": len(set(groups)) if groups is not None else int(y.size),
    }
    report["skipped"] = [dict(item) for item in skipped or ()]

    plots: dict[str, str] = {}
    cm_path = P.plot_confusion_matrix(report["confusion_matrix"], out_dir / f"{stem}_confusion.png")
    plots["confusion_matrix"] = cm_path.name
    if y.min() != y.max():
        plots["roc"] = P.plot_roc(y, prob, threshold, out_dir / f"{stem}_roc.png").name
    plots["reliability"] = P.plot_reliability(y, prob, out_dir / f"{stem}_reliability.png").name
    if history:
        plots["training"] = P.plot_training_curves(history, out_dir / f"{stem}_training.png").name
    report["plots"] = plots
    if predictions:
        csv_path = out_dir / f"{stem}_predictions.csv"
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(predictions[0]))
            writer.writeheader()
            writer.writerows(predictions)
        report["predictions"] = csv_path.name
    report["markdown"] = f"{stem}.md"
    report["data"] = ATTRIBUTION
    report["pneumo_version"] = __version__
    report["created"] = datetime.now(UTC).isoformat(timespec="seconds")

    output_json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    output_json.with_suffix(".md").write_text(_markdown(report, plots))
    log.info("wrote %s and %s", output_json, output_json.with_suffix(".md"))
    return report
