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
from pathlib import Path

import torch
from torch import nn

from pneumo.config import TrainConfig
from pneumo.data.dataset import make_loader
from pneumo.data.discover import ImageRecord
from pneumo.errors import PneumoError
from pneumo.progress import progress_bar
from pneumo.training.averaging import (
    ema_model,
    freeze_early_stages,
    interpolate,
    keep_frozen_eval,
    recompute_batchnorm,
)
from pneumo.training.checkpoints import BEST, LAST, load_checkpoint, save_checkpoint
from pneumo.training.loops import (
    class_weights,
    clean_batches,
    cosine_with_warmup,
    epoch_metrics,
    predict_loader,
)
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
    """Fine-tune ``model`` end to end; returns the best-epoch model and the per-epoch history."""
    dist = dist or DistInfo()
    run_dir = Path(cfg.output)
    ckpt_dir = run_dir / "checkpoints"
    bf16 = precision == "bf16"
    labels = [r.label_index for r in train]
    weights = class_weights(labels) if cfg.class_balance == "loss" else torch.ones(2)
    device = torch.device(cfg.device)
    criterion = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=cfg.label_smoothing)

    train_ds = image_dataset(train, data_config, cfg.augment)
    val_loader = make_loader(image_dataset(val, data_config), batch_size=64, workers=cfg.workers)
    train_loader = _train_loader(cfg, train_ds, labels, dist)

    model = model.to(memory_format=torch.channels_last)
    start_state = _start_state(model, ckpt_dir, resume=cfg.resume, write=dist.is_main)
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

    history: list[dict] = []
    shards: dict[int, list[int]] = {}  # epoch -> the films this rank drew (under torchrun)
    start_epoch, best_loss, stale = 1, math.inf, 0
    if cfg.resume:
        info = load_checkpoint(ckpt_dir, LAST, model, optimizer, scheduler, ema=ema)
        if info is None:
            raise PneumoError(f"--resume: no checkpoint in {ckpt_dir}")
        history = info["history"]
        start_epoch = info["epoch"] + 1
        best_loss, stale = info["best_loss"], info["stale"]
        log.info("resuming after epoch %d of %d", info["epoch"], cfg.epochs)

    for epoch in range(start_epoch, cfg.epochs + 1):
        if stale >= cfg.patience:
            break
        _seed_epoch(train_loader, cfg.seed, epoch)
        if dist.enabled:
            shards[epoch] = list(train_loader.sampler)
        model.train()
        keep_frozen_eval(getattr(model, "module", model), all_norms=cfg.freeze_bn)
        started = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        n_train = len(train_loader) * cfg.batch_size if train_loader.drop_last else len(train_ds)
        with progress_bar(n_train, f"epoch {epoch}/{cfg.epochs}", enabled=dist.is_main) as advance:
            for batch in train_loader:
                if batch is None:
                    continue
                x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
                y = batch["label"].to(device)
                with autocast(bf16, device.type):
                    logits = model(x)
                loss = criterion(logits.float(), y)
                if not torch.isfinite(loss):
                    raise PneumoError(
                        f"training diverged: loss is {loss.item()} at epoch {epoch}; "
                        "lower --lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(getattr(model, "module", model))
                seen += len(y)
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                advance(len(y))
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if dist.is_main:
            shipped = _with_live_buffers(ema, model)
            out = predict_loader(shipped, val_loader, bf16=bf16)
            val_m = epoch_metrics(out["logits"], out["labels"], weights)
            row.update({f"val_{k}": v for k, v in val_m.items()})
            row["seconds"] = round(time.perf_counter() - started, 1)
            history.append(row)
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
            if row["val_loss"] < best_loss:
                best_loss, stale = row["val_loss"], 0
                save_checkpoint(ckpt_dir, BEST, shipped, None, None, {"epoch": epoch})
            else:
                stale += 1
            info = {"epoch": epoch, "history": history, "best_loss": best_loss, "stale": stale}
            save_checkpoint(ckpt_dir, LAST, model, optimizer, scheduler, info, ema=ema)
        if dist.enabled:
            flag = torch.tensor([stale], dtype=torch.long)
            torch.distributed.broadcast(flag, 0)
            stale = int(flag)

    if dist.enabled:
        report = gather_report(dist, shards, model)
        if report is not None:
            write_report(report, run_dir)
    model = _with_live_buffers(ema, model)
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
    return model, history


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
