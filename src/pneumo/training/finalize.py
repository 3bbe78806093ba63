"""Turn a trained network into a deployable model: temperature and threshold fitted on
validation, out-of-distribution statistics, metadata, and the files of the model directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pneumo import __version__
from pneumo.evaluation.calibration import (
    calibrated_probabilities,
    fit_shift_and_temperature,
    shifted_logits,
)
from pneumo.evaluation.metrics import compute_metrics
from pneumo.evaluation.thresholds import bayes_threshold, choose_threshold
from pneumo.files import atomic_path
from pneumo.models.checkpoint import ModelMetadata, save_model, uncertain_band
from pneumo.models.ood import fit_ood
from pneumo.models.preprocess import DataConfig
from pneumo.models.provenance import TrainingRecord, Variant
from pneumo.training.batchnorm import BN_REFERENCE
from pneumo.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The operating point placed on validation and what it gives there."""

    temperature: float
    threshold: float
    metrics: dict
    """Validation figures at ``threshold`` (compute_metrics, with binomial intervals)."""
    p: np.ndarray
    """Calibrated validation probabilities of pneumonia."""
    shift: float = 0.0
    """Subtracted from the network's PNEUMONIA-vs-NORMAL logit (folded into the head's bias
    when the model is written)."""

    @property
    def uncertain_band(self) -> tuple[float, float]:
        return uncertain_band(self.threshold)

    def summary(self) -> dict:
        """What ``metrics.json`` records."""
        return {
            "split": "validation",
            "threshold": self.threshold,
            "temperature": self.temperature,
            "logit_shift": self.shift,
            **self.metrics,
        }


def calibrate_and_select(
    cfg: TrainConfig, logits: np.ndarray, labels: np.ndarray, train_prevalence: float
) -> Selection:
    """Place the operating point on validation by ``cfg``'s stated rule.

    1. A logit shift and a temperature (Platt scaling, class-balanced NLL), so that p is the
       validation posterior at 50% prevalence; the temperature may soften, never sharpen.
    2. The threshold by ``cfg.threshold_method`` on those probabilities: the highest one that
       reaches ``cfg.target_sensitivity`` on validation (default), Bayes' rule, or the middle of
       the balanced-accuracy plateau.
    3. The validation figures at that threshold, with exact binomial 95% intervals for its
       sensitivity and specificity (the margin of a rule read off a few hundred films).

    ``train_prevalence`` is the share of pneumonia in the training films (Bayes' rule for a model
    trained without class balancing).
    """
    balanced = cfg.class_balance != "none"
    # Validation carved from train is nearly separable, so its NLL always asks for sharper
    # probabilities (T < 1); new films are not separable, and sharpening turns their errors
    # into confident ones. The temperature may soften the network, never sharpen it.
    shift, temperature = fit_shift_and_temperature(logits, labels, balanced=balanced)
    p = calibrated_probabilities(shifted_logits(logits, shift), temperature)[:, 1]
    if cfg.threshold_method == "bayes":
        # After the balanced fit p is the posterior at 50% prevalence (for a model trained
        # without balancing, the training prevalence stays its prior).
        trained_at = 0.5 if balanced else float(train_prevalence)
        threshold = bayes_threshold(trained_at, cfg.prevalence)
    else:
        threshold = float(
            choose_threshold(
                labels, p, method=cfg.threshold_method, target_sensitivity=cfg.target_sensitivity
            )
        )
    metrics = {
        **compute_metrics(labels, p, threshold).to_dict(),
        **binomial_intervals(labels, p, threshold),
    }
    return Selection(
        temperature=temperature, threshold=threshold, metrics=metrics, p=p, shift=shift
    )


def binomial_intervals(labels, p, threshold: float) -> dict:
    """Exact (Clopper-Pearson) 95% intervals of sensitivity and specificity at ``threshold``."""
    from scipy.stats import binomtest

    y, called = np.asarray(labels), np.asarray(p) >= threshold
    out = {}
    for name, cls, hit in (("sensitivity", 1, True), ("specificity", 0, False)):
        n = int((y == cls).sum())
        if n:
            k = int((called[y == cls] == hit).sum())
            ci = binomtest(k, n).proportion_ci(0.95, method="exact")
            out[f"{name}_ci95"] = [float(ci.low), float(ci.high)]
    return out


def fold_logit_shift(model: torch.nn.Module, shift: float) -> None:
    """Lower the network's PNEUMONIA-vs-NORMAL logit by ``shift`` through its head's bias, so
    every engine (torch, ONNX, OpenVINO) serves the calibrated logits with no extra step."""
    if shift == 0:
        return
    head = model.get_classifier()
    with torch.no_grad():
        head.bias += torch.tensor([shift / 2, -shift / 2], dtype=head.bias.dtype).to(
            head.bias.device
        )


def write_model(
    cfg: TrainConfig,
    model: torch.nn.Module,
    data_config: DataConfig,
    *,
    selection: Selection,
    train_features: np.ndarray,
    val_features: np.ndarray,
    fingerprint: str,
    output: Path,
    half: bool = False,
    layouts: tuple[np.ndarray, np.ndarray] | None = None,
    bn_reference: dict | None = None,
    variant: Variant | None = None,
    films: tuple[list, list] | None = None,
) -> Path:
    """Save weights (the selection's logit shift folded into ``model``'s head), OOD statistics
    (with ``layouts``, training and validation film layouts, the layout check too),
    the training films' batch-norm statistics (the reference ``pneumo adapt`` measures a site
    against) and metadata into ``output``. ``variant`` says
    which averaging of which runs the weights are (``pneumo variants --export``); ``films``,
    the (training, validation) records, are listed in ``films.json`` for the accuracy guard."""

    ood_tensors, ood_settings = fit_ood(train_features, val_features, layouts=layouts)
    fold_logit_shift(model, selection.shift)
    metadata = ModelMetadata(
        backbone=cfg.backbone,
        data_config=data_config,
        threshold=selection.threshold,
        temperature=selection.temperature,
        uncertain_band=selection.uncertain_band,
        ood=ood_settings,
        data_fingerprint=fingerprint,
        metrics={
            "split": "validation (patient-level, carved from train)",
            "logit_shift": selection.shift,
            **selection.metrics,
        },
        training=TrainingRecord(config=cfg.to_dict(), variant=variant),
        pneumo_version=__version__,
    )
    save_model(
        output,
        model,
        metadata,
        half=half,
        extra_tensors={
            **{k: torch.from_numpy(v) for k, v in ood_tensors.items()},
            **{BN_REFERENCE + k: v for k, v in (bn_reference or {}).items()},
        },
    )
    if films is not None:
        from pneumo.models.films import write_films

        train, val = films
        write_films(output, data=cfg.data, validation=val, train=train, split=films_split(cfg))
    log.info(
        "model written to %s (threshold %.3f, temperature %.3f)",
        output,
        metadata.threshold,
        metadata.temperature,
    )
    return output


def films_split(cfg: TrainConfig) -> str:
    """How ``cfg`` chose its validation films, in words (``films.json``, the guard's report)."""
    if cfg.val_labels is not None:
        return f"validation films of {Path(cfg.val_labels).name}"
    seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    return f"patient-level validation split ({cfg.val_fraction:g} of train, seed {seed})"


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


VAL_PREDICTIONS = "val_predictions.csv"
"""Each run's validation films with the network's own logits (before any shift), so that any
operating-point rule can be applied again without a pass over the films."""


def write_val_predictions(path: Path, records, logits, labels, train_prevalence: float) -> None:
    """``relpath, patient, label, logit_normal, logit_pneumonia`` per validation film; the first
    line is a comment with the training prevalence (Bayes' rule without class balance)."""
    import csv

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        f.write(f"# train_prevalence={train_prevalence:.6f}\n")
        writer = csv.writer(f)
        writer.writerow(["relpath", "patient", "label", "logit_normal", "logit_pneumonia"])
        for record, z, y in zip(records, np.asarray(logits), np.asarray(labels), strict=True):
            writer.writerow(
                [record.relpath, record.patient, int(y), repr(float(z[0])), repr(float(z[1]))]
            )


def read_val_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits (N, 2), labels (N,) and the training prevalence of a run's ``val_predictions.csv``."""
    import csv

    from pneumo.errors import PneumoError

    try:
        lines = Path(path).read_text().splitlines()
        prevalence = float(lines[0].split("=", 1)[1])
        rows = list(csv.DictReader(lines[1:]))
        logits = np.array([[float(r["logit_normal"]), float(r["logit_pneumonia"])] for r in rows])
        labels = np.array([int(r["label"]) for r in rows])
    except (OSError, IndexError, KeyError, ValueError) as exc:
        raise PneumoError(f"{path}: not a readable {VAL_PREDICTIONS} ({exc})") from None
    if not rows:
        raise PneumoError(f"{path}: no validation predictions in it")
    return logits, labels, prevalence
