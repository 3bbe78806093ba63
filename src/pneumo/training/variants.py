"""One table of the weight-averaging choices of a fine-tuning run, computed from its
checkpoints without training again: the start, the last epoch, the EMA of weights,
WiSE-FT mixes of start and EMA, and soups when other runs from the same start are given. Each
(with its batch-norm statistics re-estimated, for runs that trained them) gets validation
(carved from train) and official 16-image val split (the canary) figures at its own operating
point, placed by the run's rule.

Validation is near-separable and cannot rank these under the train-to-test shift; the table is
there to catch a variant that breaks, and to show what each choice costs and changes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.evaluation.calibration import (
    calibrated_probabilities,
    negative_log_likelihood,
    shifted_logits,
)
from pneumo.models.checkpoint import RunDir
from pneumo.models.provenance import Variant
from pneumo.models.registry import create_model, data_config
from pneumo.training.config import TrainConfig
from pneumo.training.run_records import canary_records, training_records
from pneumo.training.train import (
    ood_reference_features,
    run_config,
    validation_pass,
    write_outputs,
)

if TYPE_CHECKING:
    from pneumo.training.finalize import Selection

# torch (through pneumo.training.averaging) is imported inside the functions: the CLI imports
# this module at start-up for its help text.

log = logging.getLogger(__name__)

START = "start (ImageNet backbone + starting head)"


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def run_states(run_dir: Path) -> dict[str, dict]:
    """The start, last-epoch and EMA weights saved by a fine-tuning run."""
    from safetensors.torch import load_file

    ckpt = RunDir(run_dir).checkpoints
    last = load_file(str(ckpt / "last.safetensors"))
    states = {
        START: load_file(str(ckpt / "start.safetensors")),
        "last epoch": _strip(last, "model."),
    }
    ema = _strip(last, "ema.module.")
    if ema:
        states["EMA of weights"] = ema
    return states


def _with_buffers(weights: dict, buffers_from: dict) -> dict:
    """EMA states hold the average of the parameters only; buffers come from the live model."""
    return {**buffers_from, **{k: v for k, v in weights.items() if k in buffers_from}}


def compare_variants(
    run: Path,
    *,
    soup_runs: list[Path] = (),
    alphas: tuple[float, ...] = (0.5, 0.75),
    canary: bool = True,
    output: Path | None = None,
) -> list[dict]:
    """Compare the weight-averaging variants of a fine-tuning run in one table.

    Computes, from RUN's checkpoints, the start (ImageNet backbone + starting head), the
    last epoch, the EMA of weights and WiSE-FT mixes of start and EMA (--alphas), plus uniform
    and greedy soups of the EMA weights of RUN and --soup runs (fine-tunes from the same start).
    Each variant (with batch-norm statistics re-estimated, for runs that trained them) is
    measured on the validation split and on the official 16-image val split (the canary, never
    selected on). Writes RUN/variants.json and RUN/variants.md.
    """
    from pneumo.training.averaging import greedy_soup

    run = Path(run)
    cfg = run_config(run)
    train_recs, val_recs = training_records(cfg)
    model = create_model(cfg.backbone, pretrained=False)
    dcfg = data_config(model)
    canary_recs = canary_records(cfg.data) if canary else []

    states = variant_states(run, alphas, soup_runs)
    averaged = states.get("EMA of weights", states["last epoch"])
    live = states["last epoch"]

    def logits_of(state: dict, records) -> tuple:
        _load_variant(model, state, cfg, train_recs, dcfg)
        logits, y, _, _ = validation_pass(model, records, dcfg, cfg)
        return logits, y

    train_prevalence = float(np.mean([r.label_index for r in train_recs]))

    def measure(state: dict) -> dict:
        from pneumo.training.finalize import calibrate_and_select

        logits, y = logits_of(state, val_recs)
        # Each variant at its own operating point, placed by the run's rule as the shipped
        # model's is (shift and temperature, then the threshold).
        chosen = calibrate_and_select(cfg, logits, y, train_prevalence)
        m = chosen.metrics
        row = {
            "val_roc_auc": m["roc_auc"],
            "val_balanced_accuracy": m["balanced_accuracy"],
            "val_sensitivity": m["sensitivity"],
            "val_specificity": m["specificity"],
            "threshold": chosen.threshold,
            "temperature": chosen.temperature,
            "logit_shift": chosen.shift,
        }
        if canary_recs:
            # The model already holds this state (and its statistics): run it as it is.
            c_logits, c_y, _, _ = validation_pass(model, canary_recs, dcfg, cfg)
            c_p = calibrated_probabilities(
                shifted_logits(c_logits, chosen.shift), chosen.temperature
            )[:, 1]
            row.update(
                canary_correct=int(((c_p >= chosen.threshold) == c_y).sum()),
                canary_n=len(c_y),
                canary_normal_mean_p=float(c_p[c_y == 0].mean()),
                canary_pneumonia_mean_p=float(c_p[c_y == 1].mean()),
            )
        return row

    def validation_nll(state: dict) -> float:
        return negative_log_likelihood(*logits_of(state, val_recs), balanced=True)

    rows = []
    for name, state in states.items():
        rows.append({"variant": name, **measure(state)})
        log.info("%s: %s", name, rows[-1])
    if soup_runs:
        ingredients = [averaged] + [_shipped(r, live) for r in soup_runs]
        soup, kept, _ = greedy_soup(ingredients, lambda s: -validation_nll(s))
        names = [([run, *soup_runs][i]).name for i in sorted(kept)]
        rows.append({"variant": f"greedy soup keeps {' + '.join(names)}", **measure(soup)})
    output = output or run / "variants.json"
    output.write_text(json.dumps(rows, indent=2) + "\n")
    output.with_suffix(".md").write_text(variants_markdown(rows))
    return rows


def _load_variant(model, state: dict, cfg: TrainConfig, train_recs, dcfg) -> None:
    """Load ``state``; a run that trained its batch-norm statistics gets them re-estimated for
    these weights (frozen statistics stay: the weights were trained against them)."""
    from pneumo.training.batchnorm import recompute_batchnorm
    from pneumo.training.loops import clean_batches

    model.load_state_dict(state)
    if not cfg.freeze_bn:
        recompute_batchnorm(model, clean_batches(train_recs, dcfg, cfg))
    model.eval()


def variants_markdown(rows: list[dict]) -> str:
    """The comparison as a Markdown table."""
    head = (
        "| variant | val ROC-AUC | threshold | val balanced accuracy | val sensitivity "
        "| val specificity | canary correct | canary NORMAL mean p | canary PNEUMONIA mean p |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        canary = (
            (
                f"{r['canary_correct']}/{r['canary_n']}",
                f"{r['canary_normal_mean_p']:.2f}",
                f"{r['canary_pneumonia_mean_p']:.2f}",
            )
            if "canary_n" in r
            else ("n/a", "n/a", "n/a")
        )
        lines.append(
            f"| {r['variant']} | {r['val_roc_auc']:.4f} | {r.get('threshold', 0.5):.3f} "
            f"| {r['val_balanced_accuracy']:.4f} "
            f"| {r['val_sensitivity']:.4f} | {r['val_specificity']:.4f} | "
            + " | ".join(canary)
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def _shipped(run: Path, live: dict) -> dict:
    states = run_states(run)
    return _with_buffers(states.get("EMA of weights", states["last epoch"]), live)


def soup_name(n: int) -> str:
    return f"uniform soup of {n} runs (EMA weights)"


def variant_states(
    run: Path, alphas: tuple[float, ...] = (0.5, 0.75), soup_runs=()
) -> dict[str, dict]:
    """Every variant's weights by name: start, last epoch, EMA, WiSE-FT mixes of start and EMA,
    and the uniform soup of RUN's and ``soup_runs``' EMA weights."""
    from pneumo.training.averaging import average_states, interpolate

    states = run_states(run)
    live = states["last epoch"]
    if "EMA of weights" in states:
        states["EMA of weights"] = _with_buffers(states["EMA of weights"], live)
    averaged = states.get("EMA of weights", live)
    for alpha in alphas:
        states[f"WiSE-FT alpha {alpha:g} (start -> EMA)"] = interpolate(
            states[START], averaged, alpha
        )
    if soup_runs:
        ingredients = [averaged] + [_shipped(Path(r), live) for r in soup_runs]
        states[soup_name(len(ingredients))] = average_states(ingredients)
    return states


def export_variant(
    run: Path, name: str, output: Path, alphas=(0.5, 0.75), soup_runs=()
) -> Selection:
    """Write variant ``name`` of ``run`` as a model directory, calibrated and thresholded by
    the run's own rule, exactly as ``pneumo train`` writes its model."""

    run = Path(run)
    cfg = run_config(run)
    states = variant_states(run, alphas, soup_runs)
    if name not in states:
        raise KeyError(f"unknown variant {name!r}; one of {sorted(states)}")
    train_recs, val_recs = training_records(cfg)
    model = create_model(cfg.backbone, pretrained=False)
    dcfg = data_config(model)
    _load_variant(model, states[name], cfg, train_recs, dcfg)
    logits, y, feats, val_recs = validation_pass(model, val_recs, dcfg, cfg)
    history = json.loads(RunDir(run).history.read_text())
    return write_outputs(
        cfg,
        model,
        dcfg,
        train_recs,
        val_recs,
        history,
        (logits, y, feats),
        ood_reference_features(model, train_recs, dcfg, cfg),
        output=Path(output),
        variant=Variant(
            name=name,
            run=str(run),
            soup_runs=tuple(str(r) for r in soup_runs),
            alphas=tuple(float(a) for a in alphas),
        ),
    )
