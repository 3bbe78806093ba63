"""The pieces every training mode shares: forward passes that also return pooled features,
class weights, the learning-rate schedule and the validation pass."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pneumo.models.outputs import temperature_softmax
from pneumo.training.runtime import autocast


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-logit features and logits of a timm classifier in one pass."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats, model.get_classifier()(feats)


def class_weights(labels: list[int], num_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, so p = 0.5 means balanced odds."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero, stepped once per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.inference_mode()
def predict_loader(model: nn.Module, loader, *, bf16: bool = False, advance=None) -> dict:
    """Run ``model`` over ``loader``: logits, features, labels, paths and patients as arrays."""

    model.eval()
    device = next(model.parameters()).device
    logits, feats, labels, paths, patients = [], [], [], [], []
    for batch in loader:
        if batch is None:
            continue
        x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        with autocast(bf16, device.type):
            f, z = features_and_logits(model, x)
        logits.append(z.float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
        labels.append(batch["label"].numpy())
        paths.extend(batch["path"])
        patients.extend(batch["patient"])
        if advance:
            advance(len(x))
    return {
        "logits": np.concatenate(logits) if logits else np.zeros((0, 2), np.float32),
        "features": np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
        "paths": paths,
        "patients": patients,
    }


def epoch_metrics(logits: np.ndarray, labels: np.ndarray, weights: torch.Tensor) -> dict:
    """Validation loss (class-weighted, like training), accuracy, balanced accuracy, ROC-AUC."""
    from sklearn.metrics import balanced_accuracy_score

    from pneumo.evaluation.metrics import roc_auc

    z = torch.from_numpy(logits)
    y = torch.from_numpy(labels).long()
    loss = float(nn.functional.cross_entropy(z, y, weight=weights))
    pred = logits.argmax(1)
    p = temperature_softmax(logits)[:, 1]
    return {
        "loss": loss,
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "roc_auc": roc_auc(labels, p),
    }


def image_batches(records: list, data_config, *, batch_size: int = 32, workers: int = 2):
    """Preprocessed image batches of ``records``, without augmentation (unreadable files are
    skipped with a warning)."""
    from pneumo.data.dataset import make_loader
    from pneumo.training.transforms import image_dataset

    loader = make_loader(
        image_dataset(records, data_config), batch_size=batch_size, workers=workers
    )
    return (batch["image"] for batch in loader)


def clean_batches(records: list, data_config, cfg, limit: int = 1024):
    """Image batches of a seeded sample of up to ``limit`` training films, without augmentation,
    for batch-norm re-estimation."""
    import random

    picked = random.Random(cfg.seed).sample(records, min(limit, len(records)))
    return image_batches(picked, data_config, batch_size=cfg.batch_size, workers=cfg.workers)
