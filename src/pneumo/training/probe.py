"""The head fine-tuning starts from. timm draws a new 2-class head uniformly in about +-0.7, so
the first logits spread by about 10 and the first gradients tear the pretrained features apart
(held-out ROC-AUC fell from 0.98 to 0.93-0.95 in the issue's probes). LP-FT (Kumar et al. 2022)
fits a linear probe on the frozen features first, so fine-tuning starts from a sensible head and
distorts the features less; a zero head is the cheap alternative."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from pneumo.cache import cache_dir
from pneumo.data.discover import ImageRecord
from pneumo.errors import PneumoError
from pneumo.training.batchnorm import recompute_batchnorm
from pneumo.training.config import TrainConfig
from pneumo.training.loops import clean_batches

log = logging.getLogger(__name__)

PROBE_EPOCHS = 40
PROBE_LR = 1e-3


def init_head(
    cfg: TrainConfig, model: nn.Module, data_config, train: list[ImageRecord], val
) -> dict:
    """Set ``model``'s classifier as ``cfg.head_init`` says; returns what was done, for the
    run's history (the probe's validation figures included)."""
    # The frozen features the probe sees must be the ones fine-tuning starts from: train mode
    # normalises with batch statistics of X-rays, eval mode with ImageNet's running statistics,
    # and a head fitted on the latter gives train loss 3 on the former. Re-estimating the running
    # statistics on training films first makes the two agree.
    recompute_batchnorm(model, clean_batches(train, data_config, cfg))
    head = model.get_classifier()
    if cfg.head_init == "random":
        return {"head_init": "random"}
    if cfg.head_init == "zero":
        with torch.no_grad():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return {"head_init": "zero"}
    return {"head_init": "probe", "probe_history": fit_probe(cfg, model, data_config, train, val)}


def load_start(model: nn.Module, path) -> dict:
    """Start from another run's starting state (backbone, BN statistics and probe head), so
    that fine-tunes with other seeds share one start and their weights can be averaged."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model.load_state_dict(state)
    except (OSError, RuntimeError) as exc:
        raise PneumoError(f"{path}: cannot start from these weights ({exc})") from None
    return {"head_init": "start_weights", "start_weights": str(path)}


def fit_probe(cfg: TrainConfig, model, data_config, train, val) -> list[dict]:
    """Fit ``model``'s head on the frozen backbone's cached fp32 features (shared with
    ``--mode frozen``), class-balanced, without label smoothing, to its best validation loss."""
    from pneumo.training.features import cached_features, model_key
    from pneumo.training.head import train_head

    was_training = model.training
    model.eval()
    key = model_key(cfg.backbone, model, data_config, "fp32")
    kwargs = dict(cache_dir=cache_dir() / "features", key=key, workers=cfg.workers)
    train_x, train_y, _ = cached_features(model, train, data_config, **kwargs)
    val_x, val_y, _ = cached_features(model, val, data_config, **kwargs)
    probe_cfg = dataclasses.replace(
        cfg,
        epochs=PROBE_EPOCHS,
        lr=PROBE_LR,
        label_smoothing=0.0,
        patience=5,
        class_balance="loss",
    )
    history = train_head(probe_cfg, model.get_classifier(), train_x, train_y, val_x, val_y)
    model.train(was_training)
    best = min(history, key=lambda row: row["val_loss"])
    log.info(
        "linear probe: epoch %d, validation loss %.4f, ROC-AUC %.4f",
        best["epoch"],
        best["val_loss"],
        best["val_roc_auc"] or float("nan"),
    )
    return history
