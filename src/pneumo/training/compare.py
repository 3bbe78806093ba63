"""The seed's model comparison done right: train each backbone with the same settings, rank on
the patient-level validation split by ROC-AUC then balanced accuracy (never plain accuracy,
which always-pneumonia scores well on this imbalanced set), write a side-by-side report,
retrain the winner on train + validation with the chosen number of epochs."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from pneumo.data.discover import data_root_of, find_images
from pneumo.data.labels import write_label_file
from pneumo.errors import DataError, PneumoError
from pneumo.evaluation.metrics import baseline_metrics
from pneumo.models.checkpoint import RunDir
from pneumo.models.registry import get_spec
from pneumo.training.run_records import training_records
from pneumo.training.train import train
from pneumo.training.train import train as run_train

log = logging.getLogger(__name__)

COLUMNS = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity", "accuracy", "f1")


def rank(results: list[dict]) -> list[dict]:
    """Best first: validation ROC-AUC, then balanced accuracy; failed runs last."""
    return sorted(
        results,
        key=lambda r: (
            r.get("error") is None,
            r.get("roc_auc") or 0.0,
            r.get("balanced_accuracy") or 0.0,
        ),
        reverse=True,
    )


def comparison_markdown(ranked: list[dict], baseline: dict | None = None) -> str:
    """Side-by-side table of the compared backbones (validation split); backbones that could
    not be trained stay in the table as "failed", with their reasons listed under it."""
    head = "| rank | backbone | mode | best epoch | " + " | ".join(COLUMNS) + " | seconds |"
    share = "" if baseline is None else f" ({baseline['accuracy']:.0%} on this validation split)"
    lines = [
        "# Backbone comparison (patient-level validation split from train)",
        "",
        "Ranked by ROC-AUC, then balanced accuracy. Plain accuracy is not used to rank: "
        f"always answering PNEUMONIA scores the share of pneumonia images{share}.",
        "",
        head,
        "|" + "---|" * (len(COLUMNS) + 5),
    ]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    failed = []
    for i, r in enumerate(ranked, 1):
        if r.get("error"):
            failed.append(f"- **{r['backbone']}**: {r['error']}")
            dashes = " | ".join("-" for _ in COLUMNS)
            lines.append(f"| {i} | {r['backbone']} (failed) | {r['mode']} | - | {dashes} | - |")
            continue
        cells = " | ".join(fmt(r.get(c)) for c in COLUMNS)
        lines.append(
            f"| {i} | {r['backbone']} | {r['mode']} | {r['best_epoch']} | {cells} | {r['seconds']:.0f} |"
        )
    if baseline:
        cells = " | ".join(fmt(baseline.get(c)) for c in COLUMNS)
        lines.append(f"| - | always PNEUMONIA | - | - | {cells} | - |")
    if failed:
        lines += ["", "Not trained:", "", *failed]
    return "\n".join(lines) + "\n"


def compare(base, backbones: list[str], *, output: Path, retrain: bool = True) -> dict:
    """Train several backbones with the same settings and rank them on validation.

    Each backbone in ``backbones`` is trained with the settings of ``base`` (a TrainConfig) and
    ranked on the patient-level validation split by ROC-AUC, then balanced accuracy; the
    comparison is written to ``comparison.md`` and ``comparison.json`` and the winner is
    retrained on train + validation ("the complete data set") for its best number of epochs.
    """
    import time

    import numpy as np

    for name in backbones:
        get_spec(name)  # fail fast on a typo, before hours of training
    output = Path(output)
    results = []
    for name in backbones:
        cfg = replace(base, backbone=name, output=output / name)
        started = time.perf_counter()
        try:
            run = train(cfg)
        except PneumoError as exc:  # e.g. ImageNet weights not available offline
            log.error("%s: %s", name, exc)
            results.append({"backbone": name, "mode": cfg.mode, "error": str(exc)})
            continue
        chosen = run.selection.summary()
        results.append(
            {
                "backbone": name,
                "mode": cfg.mode,
                "run": str(run.run_dir),
                "best_epoch": run.best_epoch,
                "seconds": time.perf_counter() - started,
                **{k: chosen.get(k) for k in (*COLUMNS, "threshold", "temperature", "logit_shift")},
            }
        )
    ranked = rank(results)
    _, val = training_records(base)
    baseline = baseline_metrics(np.asarray([r.label_index for r in val])).to_dict()
    summary = {"ranked": ranked, "baseline_always_pneumonia": baseline, "winner": None}
    if ranked and ranked[0].get("error") is None:
        winner = ranked[0]
        summary["winner"] = winner["backbone"]
        if retrain:
            summary["final"] = str(retrain_on_all(base, winner, output))
    output.mkdir(parents=True, exist_ok=True)
    (output / "comparison.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (output / "comparison.md").write_text(comparison_markdown(ranked, baseline))
    return summary


def retrain_on_all(base, winner: dict, output: Path) -> Path:
    """Retrain the winner on train + validation for its best epoch count. There is no data
    left to select on, so the threshold and temperature chosen on validation are kept."""

    train, val = training_records(base)
    labels_dir = output / "final" / "labels"
    everything = write_label_file(train + val, labels_dir / "train.csv")
    # Curves need a held-out set; the official 16-image val split serves (nothing is selected
    # on it: epochs, threshold and temperature come from the validation run).
    try:
        official = find_images(data_root_of(base.data), ["val"])
    except DataError:
        raise DataError(
            "retraining on train + validation needs the official val split for its curves; "
            "pass --no-retrain to keep the validation-run model"
        ) from None
    val_file = write_label_file(official, labels_dir / "val.csv")
    cfg = replace(
        base,
        backbone=winner["backbone"],
        output=output / "final",
        epochs=winner["best_epoch"],
        train_labels=everything,
        val_labels=val_file,
        patience=winner["best_epoch"] + 1,
    )

    run_dir = run_train(cfg).run_dir
    _keep_selection(RunDir(run_dir).model, winner)
    return run_dir


def _keep_selection(model_dir: Path, winner: dict) -> None:
    """The winner's operating point (shift, temperature, threshold from its validation run) on
    the model retrained on everything, which has no validation of its own to place one."""
    from pneumo.models.checkpoint import load_model, save_model, uncertain_band
    from pneumo.training.finalize import fold_logit_shift

    model, meta, extra = load_model(model_dir)
    fold_logit_shift(
        model, float(winner.get("logit_shift") or 0.0) - float(meta.metrics.get("logit_shift", 0.0))
    )
    meta.threshold, meta.temperature = winner["threshold"], winner["temperature"]
    meta.uncertain_band = uncertain_band(meta.threshold)
    meta.metrics = {
        "note": "retrained on train + validation; logit shift, threshold and temperature from "
        "the validation run",
        **meta.metrics,
        "logit_shift": float(winner.get("logit_shift") or 0.0),
    }
    save_model(model_dir, model, meta, extra_tensors=extra)
