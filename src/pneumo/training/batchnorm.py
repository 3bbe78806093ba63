"""Batch norm and frozen stages: what a network's normalisation layers need besides training.

- Statistics re-estimated after weight averaging, for runs that trained them (runs with frozen
  statistics keep them: every weight they visited was trained against them).
- The training films' statistics stored beside the weights (``BN_REFERENCE``), and a site's
  films measured against them (``pneumo adapt``).
- Early stages frozen for cheaper CPU fine-tuning, their BatchNorms kept in eval mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)


def _norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean and variance as a cumulative average over
    ``batches`` (images without augmentation); returns the number of images seen. Weights are
    untouched; a model without BatchNorm is left as it is."""
    norms = [m for _, m in _norms(model)]
    if not norms:
        return 0
    was_training = model.training
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.train()
    device = next(model.parameters()).device
    seen = 0
    for x in batches:
        model(x.to(device).contiguous(memory_format=torch.channels_last))
        seen += len(x)
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.train(was_training)
    log.info("batch-norm statistics re-estimated on %d images", seen)
    return seen


BN_REFERENCE = "bnref."
"""Key prefix of the training films' batch-norm input statistics stored beside the weights."""


@torch.no_grad()
def batchnorm_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict:
    """Each BatchNorm's input mean and variance over ``batches``, measured as
    ``recompute_batchnorm`` measures them, without changing ``model``."""
    import copy

    probe = copy.deepcopy(model)
    recompute_batchnorm(probe, batches)
    return {
        f"{name}.{stat}": getattr(m, f"running_{stat}").detach().cpu().clone()
        for name, m in _norms(probe)
        for stat in ("mean", "var")
    }


@torch.no_grad()
def shift_batchnorm(model: nn.Module, reference: dict, site: dict) -> None:
    """Move every BatchNorm's running statistics by how the site's films differ from the
    training films (both measured by ``batchnorm_statistics`` through the same network): mean
    by the difference, variance by the ratio. Films that look like the training films leave
    the network as it is, which a plain re-estimation does not: a network fine-tuned with frozen
    statistics learned to work with them, not with freshly measured ones."""
    for name, m in _norms(model):
        mean, var = f"{name}.mean", f"{name}.var"
        if mean not in reference or mean not in site:
            raise ValueError(f"no reference statistics for batch-norm layer {name}")
        device = m.running_mean.device
        m.running_mean += (site[mean] - reference[mean]).to(device)
        m.running_var *= (site[var] / reference[var].clamp_min(1e-8)).to(device)


def freeze_early_stages(model: nn.Module, stages: int) -> list[str]:
    """Freeze the stem and the first ``stages`` feature stages (timm's ``feature_info``): their
    weights keep ImageNet's values and their BatchNorms stay in eval mode. Fewer gradients make
    a fine-tune epoch cheaper on a CPU. Returns the names of the frozen parameters."""
    if stages <= 0:
        return []
    info = getattr(model, "feature_info", None)
    if info is None:
        raise ValueError(f"{type(model).__name__} exposes no feature stages to freeze")
    modules = [stage["module"] for stage in info]
    if stages >= len(modules):
        raise ValueError(f"can freeze at most {len(modules) - 1} stages, asked for {stages}")
    boundary = modules[stages - 1]
    params = list(model.named_parameters())
    last = max(i for i, (n, _) in enumerate(params) if n.startswith(boundary + "."))
    for _, param in params[: last + 1]:
        param.requires_grad_(False)
    return [n for n, _ in params[: last + 1]]


def keep_frozen_eval(model: nn.Module, *, all_norms: bool = False) -> None:
    """After ``model.train()``: put the BatchNorms whose weights are frozen (or, with
    ``all_norms``, every BatchNorm) back in eval mode, so they normalise with their running
    statistics as at inference instead of with each batch's."""
    for _, module in _norms(model):
        weight = module.weight
        if all_norms or (weight is not None and not weight.requires_grad):
            module.eval()
