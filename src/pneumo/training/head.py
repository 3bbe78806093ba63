"""Train the dense classification head on cached features (the seed's frozen recipe: a 2-class
dense head, Adam-family optimiser, batch 32, lr 0.002, early stopping with patience 3)."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from pneumo.errors import PneumoError
from pneumo.training.config import TrainConfig
from pneumo.training.loops import class_weights, epoch_metrics

log = logging.getLogger(__name__)


def train_head(
    cfg: TrainConfig,
    head: nn.Linear,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
) -> list[dict]:
    """Fit ``head`` in place; restores the epoch with the best validation loss."""
    torch.manual_seed(cfg.seed)
    device = head.weight.device
    x = torch.from_numpy(train_x).float().to(device)
    y = torch.from_numpy(train_y).long().to(device)
    vx = torch.from_numpy(val_x).float().to(device)
    weights = class_weights(train_y.tolist()) if cfg.class_balance != "none" else torch.ones(2)
    criterion = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, best_loss, best_state, stale = [], math.inf, None, 0
    generator = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        head.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = head(x[idx])
            loss = criterion(logits, y[idx])
            if not torch.isfinite(loss):
                raise PneumoError(f"training diverged: loss is {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        head.eval()
        with torch.no_grad():
            val_logits = head(vx).cpu().numpy()
        val_m = epoch_metrics(val_logits, val_y, weights)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / len(x),
            "train_accuracy": correct / len(x),
            "lr": cfg.lr,
            **{f"val_{k}": v for k, v in val_m.items()},
            "seconds": round(time.perf_counter() - started, 3),
        }
        history.append(row)
        if row["val_loss"] < best_loss:
            best_loss, stale = row["val_loss"], 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history
