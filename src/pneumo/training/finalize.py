"""Turn a trained network into a deployable model: temperature and threshold fitted on
validation, out-of-distribution statistics, metadata, and the files of the model directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumo import __version__
from pneumo.config import TrainConfig
from pneumo.data.transforms import DataConfig
from pneumo.models.checkpoint import ModelMetadata, save_model

log = logging.getLogger(__name__)


def calibrate_and_select(
    cfg: TrainConfig, logits: np.ndarray, labels: np.ndarray, train_labels: np.ndarray
) -> dict:
    """Temperature (NLL on validation), then the threshold by ``cfg.threshold_method``, then the
    validation figures at that threshold."""
    from pneumo.evaluation.calibration import calibrated_probabilities, fit_temperature
    from pneumo.evaluation.metrics import compute_metrics
    from pneumo.evaluation.thresholds import bayes_threshold, choose_threshold

    balanced = cfg.class_balance != "none"
    temperature = float(fit_temperature(logits, labels, balanced=balanced))
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
    return {"temperature": temperature, "threshold": threshold, "metrics": metrics, "p": p}


def uncertain_band(threshold: float, width: float = 0.15) -> tuple[float, float]:
    """Probabilities within ``width`` of the threshold (clipped to (0, 1)) are 'uncertain'."""
    return (max(0.01, threshold - width), min(0.99, threshold + width))


def write_model(
    cfg: TrainConfig,
    model: torch.nn.Module,
    data_config: DataConfig,
    *,
    selection: dict,
    train_features: np.ndarray,
    val_features: np.ndarray,
    fingerprint: str,
    output: Path,
    half: bool = False,
) -> Path:
    """Save weights, OOD statistics and metadata into ``output``."""
    from pneumo.inference.ood import fit_ood

    ood_tensors, ood_settings = fit_ood(train_features, val_features)
    metrics = {k: v for k, v in selection["metrics"].items()}
    metadata = ModelMetadata(
        backbone=cfg.backbone,
        data_config=data_config,
        threshold=selection["threshold"],
        temperature=selection["temperature"],
        uncertain_band=uncertain_band(selection["threshold"]),
        ood=ood_settings,
        data_fingerprint=fingerprint,
        metrics={"split": "validation (patient-level, carved from train)", **metrics},
        training=cfg.to_dict(),
        pneumo_version=__version__,
    )
    save_model(
        output,
        model,
        metadata,
        half=half,
        extra_tensors={k: torch.from_numpy(v) for k, v in ood_tensors.items()},
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
