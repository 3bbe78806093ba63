"""End-to-end fine-tuning: augmentation, class-balanced loss or sampling, AdamW with a cosine
schedule, an EMA of the weights, optionally frozen early stages, bf16 autocast where it is
faster, a checkpoint each epoch, ``--resume``, early stopping on validation loss, and
data-parallel training under torchrun. The shipped weights are then optionally interpolated with
the starting ones (WiSE-FT); runs that trained their batch-norm statistics get them re-estimated
on clean training films."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pneumo.data.dataset import make_loader
from pneumo.data.discover import ImageRecord
from pneumo.errors import PneumoError
from pneumo.models.checkpoint import RunDir
from pneumo.progress import progress_bar
from pneumo.training.averaging import ema_model, interpolate
from pneumo.training.batchnorm import freeze_early_stages, keep_frozen_eval, recompute_batchnorm
from pneumo.training.config import TrainConfig
from pneumo.training.loops import (
    class_weights,
    clean_batches,
    cosine_with_warmup,
    epoch_metrics,
    predict_loader,
)
from pneumo.training.resume_state import BEST, LAST, load_checkpoint, save_checkpoint
from pneumo.training.runtime import DistInfo, autocast
from pneumo.training.sharding import gather_report, shard_sampler, write_report
from pneumo.training.transforms import image_dataset

log = logging.getLogger(__name__)


def _train_loader(cfg, dataset, labels, dist: DistInfo):
    weights = None
    if cfg.class_balance == "sampler":
        weights = class_weights(labels)[torch.tensor(labels)]
    if dist.enabled:
        sampler = shard_sampler(dataset, weights, dist, cfg.seed)
    elif weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(
            weights.double(),
            num_samples=len(labels),
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    else:
        sampler = None
    return make_loader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        workers=cfg.workers,
        sampler=sampler,
        seed=cfg.seed,
        drop_last=len(dataset) > cfg.batch_size * dist.world_size,
        persistent_workers=False,  # workers take their seeds anew each epoch (_seed_epoch)
    )


def _seed_epoch(loader, seed: int, epoch: int) -> None:
    """Draw every random choice of an epoch (film order, augmentation, dropout) from the seed
    and the epoch number alone, so that a run resumed after epoch k trains epoch k + 1 exactly
    as the uninterrupted run would have."""
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)  # dropout, and augmentation without worker processes
    loader.generator.manual_seed(epoch_seed)  # shuffling, and the workers' seeds
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif getattr(sampler, "generator", None) is not None:
        sampler.generator.manual_seed(epoch_seed)


@dataclass
class _Parts:
    """What one fine-tuning run moves through its epochs."""

    model: nn.Module  # wrapped in DistributedDataParallel under torchrun
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    class_weights: torch.Tensor
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    device: torch.device
    bf16: bool


@dataclass
class _Progress:
    """Where the run stands: restored from the last checkpoint by --resume."""

    history: list[dict] = field(default_factory=list)
    next_epoch: int = 1
    best_loss: float = math.inf
    stale: int = 0

    def checkpoint_info(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "history": self.history,
            "best_loss": self.best_loss,
            "stale": self.stale,
        }


def finetune(
    cfg: TrainConfig,
    model: nn.Module,
    data_config,
    train: list[ImageRecord],
    val: list[ImageRecord],
    *,
    precision: str,
    dist: DistInfo | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Fine-tune ``model`` end to end; returns the model to ship and the per-epoch history."""
    dist = dist or DistInfo()
    ckpt_dir = RunDir(cfg.output).checkpoints
    start_state = _start_state(model, ckpt_dir, resume=cfg.resume, write=dist.is_main)
    parts = _set_up(cfg, model, data_config, train, val, precision, dist)
    progress = _resume(cfg, parts, ckpt_dir) if cfg.resume else _Progress()
    shards: dict[int, list[int]] = {}  # epoch -> the films this rank drew (under torchrun)
    for epoch in range(progress.next_epoch, cfg.epochs + 1):
        if progress.stale >= cfg.patience:
            break
        _seed_epoch(parts.train_loader, cfg.seed, epoch)
        if dist.enabled:
            shards[epoch] = list(parts.train_loader.sampler)
        started = time.perf_counter()
        row = _train_epoch(cfg, parts, epoch, dist)
        if dist.is_main:
            _validate_and_checkpoint(cfg, parts, progress, row, started, ckpt_dir)
        if dist.enabled:
            progress.stale = _from_rank_0(progress.stale, parts.device)
    if dist.enabled:
        report = gather_report(dist, shards, parts.model)
        if report is not None:
            write_report(report, Path(cfg.output))
    shipped = _shipped_model(cfg, parts, start_state, train, data_config, ckpt_dir, dist)
    return shipped, progress.history


def _set_up(cfg, model, data_config, train, val, precision: str, dist: DistInfo) -> _Parts:
    """Loaders, frozen stages, EMA, data-parallel wrapper, optimiser and schedule."""
    labels = [r.label_index for r in train]
    weights = class_weights(labels) if cfg.class_balance == "loss" else torch.ones(2)
    device = torch.device(cfg.device)
    train_ds = image_dataset(train, data_config, cfg.augment)
    train_loader = _train_loader(cfg, train_ds, labels, dist)
    val_loader = make_loader(image_dataset(val, data_config), batch_size=64, workers=cfg.workers)

    model = model.to(memory_format=torch.channels_last)
    frozen = freeze_early_stages(model, cfg.freeze_stages)
    if frozen:
        log.info("%d parameter tensors frozen (stem + %d stages)", len(frozen), cfg.freeze_stages)
    ema = ema_model(model, cfg.ema_decay) if cfg.ema_decay else None
    if dist.enabled:
        model = nn.parallel.DistributedDataParallel(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = cosine_with_warmup(
        optimizer, cfg.epochs * steps_per_epoch, warmup_steps=min(steps_per_epoch, 100)
    )
    criterion = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=cfg.label_smoothing)
    return _Parts(
        model=model,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        class_weights=weights,
        train_loader=train_loader,
        val_loader=val_loader,
        device=device,
        bf16=precision == "bf16",
    )


def _resume(cfg, parts: _Parts, ckpt_dir: Path) -> _Progress:
    """Weights, EMA, optimiser and schedule of the last finished epoch, and the history."""
    info = load_checkpoint(
        ckpt_dir, LAST, parts.model, parts.optimizer, parts.scheduler, ema=parts.ema
    )
    if info is None:
        raise PneumoError(f"--resume: no checkpoint in {ckpt_dir}")
    log.info("resuming after epoch %d of %d", info["epoch"], cfg.epochs)
    return _Progress(info["history"], info["epoch"] + 1, info["best_loss"], info["stale"])


def _train_epoch(cfg, parts: _Parts, epoch: int, dist: DistInfo) -> dict:
    """One pass over this rank's training films; the epoch's training figures."""
    model, loader = parts.model, parts.train_loader
    model.train()
    keep_frozen_eval(getattr(model, "module", model), all_norms=cfg.freeze_bn)
    seen, loss_sum, correct = 0, 0.0, 0
    n_train = len(loader) * cfg.batch_size if loader.drop_last else len(loader.dataset)
    with progress_bar(n_train, f"epoch {epoch}/{cfg.epochs}", enabled=dist.is_main) as advance:
        for batch in loader:
            if batch is None:
                continue
            x = batch["image"].to(parts.device).contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(parts.device)
            with autocast(parts.bf16, parts.device.type):
                logits = model(x)
            loss = parts.criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise PneumoError(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}; "
                    "lower --lr or check the data"
                )
            parts.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            parts.optimizer.step()
            parts.scheduler.step()
            if parts.ema is not None:
                parts.ema.update_parameters(getattr(model, "module", model))
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            advance(len(y))
    return {
        "epoch": epoch,
        "train_loss": loss_sum / max(1, seen),
        "train_accuracy": correct / max(1, seen),
        "lr": parts.optimizer.param_groups[0]["lr"],
    }


def _validate_and_checkpoint(
    cfg, parts: _Parts, progress: _Progress, row: dict, started: float, ckpt_dir: Path
) -> None:
    """Validation figures of the network that would ship (the EMA), early-stopping count, and
    the epoch's checkpoints (rank 0 only)."""
    epoch = row["epoch"]
    shipped = _with_live_buffers(parts.ema, parts.model)
    out = predict_loader(shipped, parts.val_loader, bf16=parts.bf16)
    val_m = epoch_metrics(out["logits"], out["labels"], parts.class_weights)
    row.update({f"val_{k}": v for k, v in val_m.items()})
    row["seconds"] = round(time.perf_counter() - started, 1)
    progress.history.append(row)
    log.info(
        "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f bal-acc %.4f auc %s",
        epoch,
        row["train_loss"],
        row["train_accuracy"],
        row["val_loss"],
        row["val_accuracy"],
        row["val_balanced_accuracy"],
        row["val_roc_auc"],
    )
    if row["val_loss"] < progress.best_loss:
        progress.best_loss, progress.stale = row["val_loss"], 0
        save_checkpoint(ckpt_dir, BEST, shipped, None, None, {"epoch": epoch})
    else:
        progress.stale += 1
    save_checkpoint(
        ckpt_dir,
        LAST,
        parts.model,
        parts.optimizer,
        parts.scheduler,
        progress.checkpoint_info(epoch),
        ema=parts.ema,
    )


def _from_rank_0(value: int, device: torch.device) -> int:
    """Rank 0's value on every rank (early stopping is decided where validation runs); the
    tensor lives on the process's device, as NCCL requires."""
    flag = torch.tensor([value], dtype=torch.long, device=device)
    torch.distributed.broadcast(flag, 0)
    return int(flag)


def _shipped_model(cfg, parts: _Parts, start_state, train, data_config, ckpt_dir, dist):
    """The EMA (or the last or best epoch), mixed with the start for WiSE-FT, with batch-norm
    statistics re-estimated for runs that trained them."""
    model = _with_live_buffers(parts.ema, parts.model)
    if dist.is_main and cfg.select_epoch == "best":
        best = load_checkpoint(ckpt_dir, BEST, model)
        if best is not None:
            log.info("best epoch by validation loss: %d", best["epoch"])
    if cfg.wise_alpha < 1:
        model.load_state_dict(interpolate(start_state, model.state_dict(), cfg.wise_alpha))
        log.info("WiSE-FT: %.2f of the fine-tuned weights, the rest from the start", cfg.wise_alpha)
    if dist.is_main and not cfg.freeze_bn:
        # With batch statistics in training, no running statistics match the averaged or
        # final weights. With frozen statistics the network learned to work with them (and an
        # average of runs sharing them shares them), so they stay.
        recompute_batchnorm(model, clean_batches(train, data_config, cfg))
    model.eval()
    return model


def _start_state(model: nn.Module, ckpt_dir: Path, *, resume: bool, write: bool) -> dict:
    """The weights fine-tuning started from (backbone + initial head), kept on disk for WiSE-FT
    so that a resumed run interpolates towards the true start."""
    from safetensors.torch import load_file, save_file

    path = ckpt_dir / "start.safetensors"
    if resume and path.is_file():
        return load_file(str(path))
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    if write:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
    return state


def _with_live_buffers(ema, model: nn.Module) -> nn.Module:
    """The network that ships: the EMA's weights with the live model's BN statistics (the
    average keeps no statistics of its own), or the live model when EMA is off."""
    live = getattr(model, "module", model)
    if ema is None:
        return live
    with torch.no_grad():
        for averaged, current in zip(ema.module.buffers(), live.buffers(), strict=True):
            averaged.copy_(current)
    return ema.module
