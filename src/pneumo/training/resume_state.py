"""Per-epoch training checkpoints for ``--resume``: model and optimiser tensors in safetensors,
counters and history in JSON. No pickles."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pneumo.files import atomic_path, write_atomic

log = logging.getLogger(__name__)
LAST = "last"
BEST = "best"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = float(value)
    return tensors, scalars


def save_checkpoint(
    folder: Path, name: str, model, optimizer, scheduler, info: dict, *, ema=None
) -> None:
    """Write ``name.safetensors`` and ``name.json`` atomically (a crash mid-write keeps the old).
    ``ema`` (an AveragedModel) is saved beside the model so a resumed run keeps its average."""
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(
            {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        )
    extra = {}
    if optimizer is not None:
        opt_tensors, scalars = _optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        extra["optimizer_scalars"] = scalars
        extra["optimizer_param_groups"] = [
            {k: v for k, v in g.items() if k != "params"}
            for g in optimizer.state_dict()["param_groups"]
        ]
    if scheduler is not None:
        extra["scheduler"] = scheduler.state_dict()
    with atomic_path(folder / f"{name}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_atomic(folder / f"{name}.json", json.dumps({**info, **extra}, indent=1, default=str))


def load_checkpoint(
    folder: Path, name: str, model, optimizer=None, scheduler=None, *, ema=None
) -> dict | None:
    """Restore a checkpoint into the given objects; returns its info, or None when absent."""
    path = folder / f"{name}.safetensors"
    if not path.is_file() or not (folder / f"{name}.json").is_file():
        return None
    tensors = load_file(str(path))
    info = json.loads((folder / f"{name}.json").read_text())
    model = getattr(model, "module", model)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        saved = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not saved:
            raise ValueError(f"{path} holds no weight average; resume with the same settings")
        ema.load_state_dict(saved)
    if optimizer is not None and "optimizer_scalars" in info:
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, pid, field = key.split(".", 2)
                state.setdefault(int(pid), {})[field] = value
        for key, value in info["optimizer_scalars"].items():
            pid, field = key.split(".", 1)
            state.setdefault(int(pid), {})[field] = torch.tensor(value)
        groups = optimizer.state_dict()["param_groups"]
        for group, saved in zip(groups, info["optimizer_param_groups"], strict=True):
            group.update(saved)
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and "scheduler" in info:
        scheduler.load_state_dict(info["scheduler"])
    return info
