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
from pneumo.config import TrainConfig
from pneumo.evaluation.calibration import calibrated_probabilities, fit_temperature
from pneumo.evaluation.metrics import compute_metrics
from pneumo.evaluation.thresholds import bayes_threshold, choose_threshold
from pneumo.inference.ood import fit_ood
from pneumo.models.checkpoint import ModelMetadata, save_model
from pneumo.models.preprocess import DataConfig
from pneumo.training.averaging import BN_REFERENCE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The operating point chosen on validation and what it gives there."""

    temperature: float
    threshold: float
    metrics: dict
    """Validation figures at ``threshold`` (compute_metrics)."""
    p: np.ndarray
    """Calibrated validation probabilities of pneumonia."""

    @property
    def uncertain_band(self) -> tuple[float, float]:
        return uncertain_band(self.threshold)

    def summary(self) -> dict:
        """What ``metrics.json`` records."""
        return {
            "split": "validation",
            "threshold": self.threshold,
            "temperature": self.temperature,
            **self.metrics,
        }


def calibrate_and_select(
    cfg: TrainConfig, logits: np.ndarray, labels: np.ndarray, train_labels: np.ndarray
) -> Selection:
    """Temperature (NLL on validation), then the threshold by ``cfg.threshold_method``, then the
    validation figures at that threshold."""

    balanced = cfg.class_balance != "none"
    # Validation carved from train is nearly separable, so its NLL always asks for sharper
    # probabilities (T < 1); new films are not separable, and sharpening turns their errors
    # into confident ones. The temperature may soften the network, never sharpen it.
    temperature = max(1.0, float(fit_temperature(logits, labels, balanced=balanced)))
    p = calibrated_probabilities(logits, temperature)[:, 1]
    if cfg.threshold_method == "bayes":
        # A class-balanced model's p is the posterior at 50% prevalence; without balancing it is
        # the posterior at the training prevalence.
        trained_at = 0.5 if balanced else float(np.mean(train_labels))
        threshold = bayes_threshold(trained_at, cfg.prevalence)
    else:
        threshold = float(
            choose_threshold(
                labels, p, method=cfg.threshold_method, target_sensitivity=cfg.target_sensitivity
            )
        )
    metrics = compute_metrics(labels, p, threshold)
    return Selection(temperature=temperature, threshold=threshold, metrics=metrics, p=p)


UNCERTAIN_ODDS = 4.0
"""Films whose odds against the threshold are below 4:1 either way are 'uncertain'."""


def uncertain_band(threshold: float, odds: float = UNCERTAIN_ODDS) -> tuple[float, float]:
    """The probabilities whose odds, relative to the threshold's, are within ``odds``:1 either
    way (p 0.2-0.8 around a threshold of 0.5). Symmetric in logit space, the unit the network
    computes in, so a threshold away from 0.5 gets a band of the same meaning."""
    from scipy.special import expit, logit

    if odds <= 1:
        raise ValueError(f"odds must be > 1, got {odds}")
    centre, width = float(logit(threshold)), float(np.log(odds))
    return (float(expit(centre - width)), float(expit(centre + width)))


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
    bn_reference: dict | None = None,
    variant: dict | None = None,
) -> Path:
    """Save weights, OOD statistics, the training films' batch-norm statistics (the reference
    ``pneumo adapt`` measures a site against) and metadata into ``output``. ``variant`` says
    which averaging of which runs the weights are (``pneumo variants --export``)."""

    ood_tensors, ood_settings = fit_ood(train_features, val_features)
    metadata = ModelMetadata(
        backbone=cfg.backbone,
        data_config=data_config,
        threshold=selection.threshold,
        temperature=selection.temperature,
        uncertain_band=selection.uncertain_band,
        ood=ood_settings,
        data_fingerprint=fingerprint,
        metrics={"split": "validation (patient-level, carved from train)", **selection.metrics},
        training={**cfg.to_dict(), **({"variant": variant} if variant else {})},
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
    log.info(
        "model written to %s (threshold %.3f, temperature %.3f)",
        output,
        metadata.threshold,
        metadata.temperature,
    )
    return output


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
