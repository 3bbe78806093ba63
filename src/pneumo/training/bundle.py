"""Package a trained run as the bundled default model: fp16 weights (a few MB, fit for git),
the exported graph serving runs (``model.onnx``, fp16-stored, so serving needs no torch), the
list of its validation and calibration films, metadata, training history and a model card whose
every figure is computed here, from the run's own files and from the shipped graph (never
written by hand). The figures come from a predictor the caller passes in: training does not
import the serving engine."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import PneumoError
from pneumo.evaluation.calibration import expected_calibration_error
from pneumo.evaluation.metrics import compute_metrics
from pneumo.inference.export import export_onnx
from pneumo.models.checkpoint import (
    GRAPH_FILE,
    HISTORY_FILE,
    OodConfig,
    RunDir,
    load_model,
    read_metadata,
    save_model,
)
from pneumo.models.films import write_films
from pneumo.models.provenance import Variant
from pneumo.training.config import TrainConfig, option_flag
from pneumo.training.run_records import canary_records, training_records
from pneumo.training.train import RunFacts, run_config

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Operating points shown in the card, beside the model's own."""

STATIC = """**Research use only. Not a medical device.** It has not been cleared or approved for clinical
use; a clinician must review every image and decision.

## Intended use
Screening aid for research on **pediatric** (age 1-5) frontal chest X-rays, classifying
NORMAL vs PNEUMONIA (bacterial or viral). Not for adults, lateral views, CT, or other
findings; out-of-distribution images (not chest X-rays, other populations) are flagged by a
feature-distance check but can still be misclassified.

## Data and licence
Trained on the official training split of "Chest X-Ray Images (Pneumonia)": Kermany, Zhang,
Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, licence CC BY 4.0; paper: Kermany
et al., Cell 172(5):1122-1131, 2018 (Guangzhou Women and Children's Medical Center).
"""


def _ood_line(ood: OodConfig | None) -> str:
    if ood is None:
        return "- Out-of-distribution check: none stored with this model (colour images only)."
    return (
        f"- Out-of-distribution check: cosine distance to the {ood.k}-th nearest of "
        f"{ood.reference_size} stored training features, cut-off {ood.cutoff:.3f} (validation "
        f"{ood.quantile} quantile x {ood.margin})"
        + (
            f"; coarse layout correlating less than {ood.layout_cutoff:.3f} with the mean "
            "training film (grey photographs, documents, textures)"
            if ood.layout_cutoff is not None
            else ""
        )
        + (
            f"; coarse layout further than {ood.layout_residual_cutoff:.3f} from the training "
            "films' layout subspace (CT or MR slices exported as pictures)"
            if ood.layout_residual_cutoff is not None
            else ""
        )
        + "; colour images are flagged too. A safeguard, not a guarantee."
    )


def reproduce_command(cfg: TrainConfig, data: str = "../shared/data/chest_xray") -> str:
    """The `pneumo train` command line that gives ``cfg`` (options that differ from the CLI's
    defaults, plus the ones every reader wants to see)."""
    default = TrainConfig(mode=cfg.mode)
    args = ["pneumo", "train", "--mode", cfg.mode, "--backbone", cfg.backbone]
    options = (
        "epochs",
        "lr",
        "batch_size",
        "weight_decay",
        "label_smoothing",
        "class_balance",
        "head_init",
        "freeze_stages",
        "ema_decay",
        "wise_alpha",
        "select_epoch",
        "threshold_method",
        "prevalence",
        "val_fraction",
        "seed",
        "split_seed",
        "start_weights",
    )
    for name in options:
        value = getattr(cfg, name)
        shown = name in ("epochs", "lr") or value != getattr(default, name)
        if shown and value is not None:
            args += [option_flag(name), f"{value:g}" if isinstance(value, float) else str(value)]
    args.append("--freeze-bn" if cfg.freeze_bn else "--train-bn")
    args += ["--data", data, "--output", str(cfg.output)]
    return " ".join(shlex.quote(a) for a in args)


def _threshold_rule(cfg: TrainConfig, threshold: float) -> str:
    if cfg.threshold_method == "bayes":
        balanced = cfg.class_balance != "none"
        trained = (
            "class-balanced, so p is the posterior at 50% prevalence"
            if balanced
            else ("without class balancing, so p is the posterior at the training prevalence")
        )
        where = (
            f"moved by Bayes' rule to a deployment prevalence of {cfg.prevalence:.0%}"
            if cfg.prevalence is not None
            else "the point of balanced errors (no deployment prevalence stated)"
        )
        return (
            f"Bayes' rule, not a fit on validation: the model was trained {trained}; the "
            f"threshold {threshold:.3f} is {where}. Validation carved from train is nearly "
            "separable, so thresholds fitted on it land wherever its class gap happens to be."
        )
    if cfg.threshold_method == "sensitivity":
        return (
            f"the highest threshold reaching {cfg.target_sensitivity:.0%} sensitivity on "
            f"validation: {threshold:.3f}"
        )
    return f"the middle of validation's balanced-accuracy plateau: {threshold:.3f}"


def _margins(metrics: dict) -> str:
    """The exact binomial 95% intervals of the validation sensitivity and specificity."""
    parts = [
        f"{name} {_pct(metrics[name])} (95% CI {_pct(metrics[key][0])}-{_pct(metrics[key][1])})"
        for name, key in (("sensitivity", "sensitivity_ci95"), ("specificity", "specificity_ci95"))
        if metrics.get(key) and metrics.get(name) is not None
    ]
    return f"; there, {' and '.join(parts)}" if parts else ""


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _predict(predictor, records) -> tuple[np.ndarray, np.ndarray]:
    preds = predictor.predict_sources([r.path for r in records])
    keep = [i for i, pred in enumerate(preds) if pred.error is None]
    p = np.array([preds[i].model_probability for i in keep])
    y = np.array([records[i].label_index for i in keep])
    return y, p


def shipped_figures(predictor, cfg: TrainConfig, *, stress: bool = False) -> dict:
    """Validation and canary (official val split) figures of the shipped model served by
    ``predictor`` (a ``pneumo.inference`` Predictor), at the model's threshold and across
    ``THRESHOLDS``; with ``stress``, the validation films under the stress battery's
    acquisition shifts too."""

    meta = predictor.metadata
    _, val_recs = training_records(cfg)
    y, p = _predict(predictor, val_recs)
    in_band = (p >= meta.uncertain_band[0]) & (p <= meta.uncertain_band[1])
    wrong = (p >= meta.threshold) != (y == 1)
    figures = {
        "validation": {
            **compute_metrics(y, p, meta.threshold).to_dict(),
            "ece": expected_calibration_error(y, p),
            "uncertain_share": float(np.mean(in_band)),
            "errors": int(wrong.sum()),
            "errors_in_band": int((wrong & in_band).sum()),
        },
        "sweep": [],
    }
    canary = canary_records(cfg.data)
    if canary:
        cy, cp = _predict(predictor, canary)
        figures["canary"] = {
            "n": int(len(cy)),
            "correct": int(((cp >= meta.threshold) == cy).sum()),
            "normal_p": [round(float(v), 3) for v in np.sort(cp[cy == 0])],
            "pneumonia_p": [round(float(v), 3) for v in np.sort(cp[cy == 1])],
        }
    sets = {"val": (y, p), **({"canary": (cy, cp)} if canary else {})}
    for t in sorted({*THRESHOLDS, round(meta.threshold, 3)}):
        row = {"threshold": t, "is_model": abs(t - meta.threshold) < 5e-4}
        for prefix, (labels, probs) in sets.items():
            m = compute_metrics(labels, probs, t)
            row[f"{prefix}_sensitivity"] = m.sensitivity
            row[f"{prefix}_specificity"] = m.specificity
        figures["sweep"].append(row)
    if stress:
        from pneumo.evaluation.stress import stress_test

        report = stress_test(predictor, val_recs)
        keys = ("roc_auc", "balanced_accuracy", "sensitivity", "specificity")
        figures["stress"] = {
            name: {k: shift[k] for k in keys} for name, shift in report["shifts"].items()
        }
    return figures


def _stress_lines(stress: dict | None) -> list[str]:
    """The stress battery's table (``pneumo evaluate --stress`` on the validation films)."""
    if not stress:
        return []
    lines = [
        "",
        "## Under acquisition shifts (the stress battery on the validation films)",
        "",
        "| shift | ROC-AUC | balanced accuracy | sensitivity | specificity |",
        "|---|---|---|---|---|",
    ]
    for name, m in stress.items():
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
        lines.append(
            f"| {name} | {auc} | {m['balanced_accuracy']:.4f} | {_pct(m['sensitivity'])} "
            f"| {_pct(m['specificity'])} |"
        )
    return lines


def _variant_sentence(variant: Variant | None) -> str:
    """The model card's words for a weight-averaging variant ('' for the run's own weights)."""
    if variant is None:
        return ""
    soup = f" and {', '.join(variant.soup_runs)}" if variant.soup_runs else ""
    return f" Exported as variant '{variant.name}' of the run{soup} (`pneumo variants`)."


def model_card(run_dir: Path, dest: Path, figures: dict, cfg: TrainConfig | None = None) -> str:
    """The model card of the model in ``dest`` packaged from ``run_dir`` (``cfg``: the run's
    config with the operating-point rule the bundle applied)."""

    meta = read_metadata(dest)
    run = RunDir(run_dir)
    cfg = cfg or run_config(run_dir)
    facts = RunFacts.read(run_dir)
    history = json.loads(run.history.read_text())
    head = run.head_init
    head_init = json.loads(head.read_text())["head_init"] if head.is_file() else "random"
    minutes = sum(h.get("seconds", 0) for h in history) / 60
    size = "x".join(map(str, meta.data_config.input_size))
    lines = [f"# pneumo model: {meta.backbone}", "", STATIC]
    lines += [f"Training data fingerprint: `{meta.data_fingerprint}`.", "", "## Recipe"]
    lines.append(
        f"- Backbone `{meta.backbone}`, ImageNet weights from "
        f"{facts.weights_source}; input {size}, mean "
        f"{meta.data_config.mean}, std {meta.data_config.std}."
    )
    if cfg.mode == "finetune":
        lines += [
            f"- Fine-tuned end to end for {len(history)} epochs ({minutes:.0f} minutes on "
            f"{facts.world_size} process(es), {facts.resolved_precision}), "
            f"batch {cfg.batch_size}, AdamW lr {cfg.lr:g} with warm-up and cosine decay, weight "
            f"decay {cfg.weight_decay:g}, label smoothing {cfg.label_smoothing:g}, class balance "
            f"`{cfg.class_balance}`.",
            f"- Starting head: `{head_init}`"
            + (
                " (a linear probe fitted on the frozen features after batch-norm statistics were "
                "re-estimated on training films: LP-FT)"
                if head_init == "probe"
                else ""
            )
            + f"; batch-norm statistics {'frozen' if cfg.freeze_bn else 'trained'} during "
            f"fine-tuning; {cfg.freeze_stages} early stages frozen.",
            "- Shipped weights: "
            + (f"EMA (decay {cfg.ema_decay:g}) of " if cfg.ema_decay else "")
            + f"the {cfg.select_epoch} epoch"
            + (f", WiSE-FT mixed at alpha {cfg.wise_alpha:g}" if cfg.wise_alpha < 1 else "")
            + (
                "; batch-norm statistics kept as they were frozen during training (the network "
                "learned with them)."
                if cfg.freeze_bn
                else "; batch-norm statistics re-estimated on 1024 clean training films afterwards."
            )
            + _variant_sentence(meta.training.variant),
            f"- Augmentation: {cfg.augment.to_dict()}.",
        ]
    else:
        lines.append(
            f"- Frozen backbone, dense head trained on cached features for {len(history)} epochs."
        )
    lines += [
        f"- Validation: {cfg.val_fraction:.0%} of the training patients (patient-level, "
        f"stratified, seed {cfg.seed}); the official test split was never used.",
        f"- Operating point placed on the validation predictions (docs/robustness.md): logit "
        f"shift {meta.metrics.get('logit_shift', 0.0):+.3f} (folded into the head's bias) and "
        f"temperature {meta.temperature:.3f} (Platt scaling, class-balanced, never below 1); "
        f"threshold rule: {_threshold_rule(cfg, meta.threshold)}"
        f"{_margins(meta.metrics)}. 'Uncertain' band "
        f"{meta.uncertain_band[0]:.2f}-{meta.uncertain_band[1]:.2f}.",
        _ood_line(meta.ood),
        "",
    ]
    v = figures["validation"]
    lines += [
        f"## Validation figures of the shipped fp16 weights (n = {v['n']}: {v['n_normal']} NORMAL,"
        f" {v['n_pneumonia']} PNEUMONIA)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ece"):
        value = v[key]
        lines.append(f"| {key} | {value:.4f} |" if value is not None else f"| {key} | n/a |")
    lines.append(f"| share of films in the uncertain band | {_pct(v['uncertain_share'])} |")
    lines.append(f"| errors inside the uncertain band | {v['errors_in_band']} of {v['errors']} |")
    canary = figures.get("canary")
    lines.append("")
    if canary:
        lines += [
            f"Official 16-image val split (the canary, never selected on): {canary['correct']}/"
            f"{canary['n']} correct; NORMAL films' p: {canary['normal_p']}; PNEUMONIA films' p: "
            f"{canary['pneumonia_p']}.",
            "",
        ]
    lines += [
        "## Across thresholds",
        "",
        "| threshold | val sensitivity | val specificity | canary sensitivity | canary specificity |",
        "|---|---|---|---|---|",
    ]
    for r in figures["sweep"]:
        t = f"**{r['threshold']:.3f} (model)**" if r["is_model"] else f"{r['threshold']:.3f}"
        lines.append(
            f"| {t} | {_pct(r['val_sensitivity'])} | {_pct(r['val_specificity'])} "
            f"| {_pct(r.get('canary_sensitivity'))} | {_pct(r.get('canary_specificity'))} |"
        )
    lines += _stress_lines(figures.get("stress"))
    lines += [
        "",
        "Validation carved from train is optimistic: the official test split is known to be "
        "harder (its NORMAL films differ from train), and figures measured there are lower. The "
        "held-out test split is evaluated outside this project.",
        "",
    ]
    variants = run_dir / "variants.md"
    if variants.is_file():
        lines += [
            "## Weight-averaging variants of this run (`pneumo variants`)",
            "",
            "Each variant at its own operating point, placed by the run's rule (logit shift and "
            "temperature fitted on validation, T never below 1, then the threshold). "
            "Validation cannot rank these under the train-to-test shift; the choice follows the "
            "literature on robust fine-tuning (see docs/robustness.md).",
            "",
            variants.read_text().strip(),
            "",
        ]
    variant = meta.training.variant
    lines += ["## Reproduce", "", "```bash", reproduce_command(cfg)]
    if variant:
        for soup_run in variant.soup_runs:
            if RunDir(soup_run).config.is_file():
                lines.append(reproduce_command(run_config(soup_run)))
        export = ["pneumo", "variants", str(cfg.output)]
        for soup_run in variant.soup_runs:
            export += ["--soup", soup_run]
        export += ["--export", variant.name]
        lines.append(" ".join(shlex.quote(a) for a in export))
    lines += [f"pneumo bundle {shlex.quote(str(cfg.output))} --dest {dest}", "```", ""]
    return "\n".join(lines)


def bundle_model(
    run_dir: Path,
    dest: Path,
    *,
    threshold_method: str | None = None,
    target_sensitivity: float | None = None,
    prevalence: float | None = None,
    predictor_for: Callable[[Path], Any],
) -> Path:
    """Package a trained run as the bundled model: fp16 weights, the ONNX graph serving runs,
    its validation films, history and a model card.

    Copies the model of ``run_dir`` to ``dest`` (default ``models/default``) with its weights in
    fp16, exports them to ``model.onnx`` (fp16-stored, computed in fp32: serving needs no
    torch), lists its validation and int8 calibration films in ``films.json`` (the accuracy
    guard judges reduced precision on them), copies its training history, then writes
    MODEL_CARD.md: the recipe from the run's config, the threshold rule, and validation and
    official-val (canary) figures computed from the shipped graph at the model's threshold and
    across thresholds. --threshold-method,
    --target-sensitivity and --prevalence place the operating point again by another rule,
    from the model's saved validation predictions (no pass over the films).
    """
    import dataclasses

    from pneumo.training.finalize import VAL_PREDICTIONS, films_split

    run_dir, dest = Path(run_dir), Path(dest)
    run = RunDir(run_dir)
    model, meta, extra = load_model(run.model)
    cfg = run_config(run_dir)
    rule = {
        k: v
        for k, v in (
            ("threshold_method", threshold_method),
            ("target_sensitivity", target_sensitivity),
            ("prevalence", prevalence),
        )
        if v is not None
    }
    if rule:
        cfg = dataclasses.replace(cfg, **rule)
        replace_operating_point(model, meta, cfg, run.model / VAL_PREDICTIONS)
    if dest.exists():
        shutil.rmtree(dest)
    save_model(dest, model, meta, half=True, extra_tensors=extra)
    export_onnx(dest, dest / GRAPH_FILE)
    train_recs, val_recs = training_records(cfg)
    write_films(dest, data=cfg.data, validation=val_recs, train=train_recs, split=films_split(cfg))
    history = json.loads(run.history.read_text())
    (dest / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
    figures = shipped_figures(predictor_for(dest), cfg, stress=True)
    (dest / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    (dest / "MODEL_CARD.md").write_text(model_card(run_dir, dest, figures, cfg=cfg))
    return dest


def replace_operating_point(model, meta, cfg: TrainConfig, predictions: Path) -> None:
    """Place ``model``'s operating point by ``cfg``'s rule on the validation predictions the
    run saved: the new shift is folded into the head (less the one already there), and the
    threshold, temperature, band and validation figures of ``meta`` follow."""
    from pneumo.training.finalize import (
        calibrate_and_select,
        fold_logit_shift,
        read_val_predictions,
    )

    if not Path(predictions).is_file():
        raise PneumoError(
            f"{predictions}: no saved validation predictions (runs before pneumo 0.x did not "
            "write them); export the model again with `pneumo variants RUN --export ...`"
        )
    logits, labels, train_prevalence = read_val_predictions(predictions)
    selection = calibrate_and_select(cfg, logits, labels, train_prevalence)
    fold_logit_shift(model, selection.shift - float(meta.metrics.get("logit_shift", 0.0)))
    meta.threshold, meta.temperature = selection.threshold, selection.temperature
    meta.uncertain_band = selection.uncertain_band
    meta.metrics = {
        "split": "validation (patient-level, carved from train)",
        "logit_shift": selection.shift,
        **selection.metrics,
    }
    meta.training = meta.training.updated(
        threshold_method=cfg.threshold_method,
        target_sensitivity=cfg.target_sensitivity,
        prevalence=cfg.prevalence,
    )
