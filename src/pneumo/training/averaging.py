"""Weight averaging that holds up under distribution shift, and what it needs afterwards.

- EMA of weights during fine-tuning (a cheap cousin of SWA: Izmailov et al. 2018).
- WiSE-FT (Wortsman et al. 2022): interpolate the starting weights (ImageNet backbone + linear
  probe head) and the fine-tuned ones; the mix keeps more of the general features.
- Greedy soups (Wortsman et al. 2022): average fine-tunes that share one start.
- Batch-norm statistics re-estimated afterwards, for runs that trained them: an average of
  weights is a new network whose activations no longer match any run's running statistics.
  (Runs with frozen statistics keep them: every weight they visited was trained against them.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)


def ema_model(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights with timm-style warm-up: the decay
    ramps as (1 + n) / (10 + n) up to ``decay``, so the initial weights fade out quickly
    instead of lingering in the average for most of a short run."""
    if not 0 < decay < 1:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")

    def average(avg: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return avg * d + current * (1 - d)

    # Parameters only: the BN statistics of the shipped network are the live model's.
    return torch.optim.swa_utils.AveragedModel(model, avg_fn=average, use_buffers=False)


def interpolate(start: dict, end: dict, alpha: float) -> dict:
    """WiSE-FT: ``(1 - alpha) * start + alpha * end`` for floating tensors (alpha 1 = ``end``);
    integer buffers (BN batch counters) come from ``end``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if start.keys() != end.keys():
        raise ValueError("the two state dicts have different keys (not the same architecture)")
    return {
        k: torch.lerp(start[k].to(end[k].device).float(), end[k].float(), alpha).to(end[k].dtype)
        if end[k].is_floating_point()
        else end[k].clone()
        for k in end
    }


def average_states(states: list[dict]) -> dict:
    """The uniform average of several state dicts of one architecture (a model soup)."""
    if not states:
        raise ValueError("nothing to average")
    first = states[0]
    if any(s.keys() != first.keys() for s in states):
        raise ValueError("the state dicts have different keys (not the same architecture)")
    return {
        k: (sum(s[k].float() for s in states) / len(states)).to(first[k].dtype)
        if first[k].is_floating_point()
        else first[k].clone()
        for k in first
    }


def greedy_soup(
    states: list[dict], score: Callable[[dict], float]
) -> tuple[dict, list[int], list[float]]:
    """Wortsman et al.'s greedy soup: sort ingredients by ``score`` (higher is better), then add
    each one to the soup only if the averaged soup does not score lower. Returns the soup, the
    indices kept and each ingredient's own score."""
    scores = [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    kept = [order[0]]
    best = scores[order[0]]
    for i in order[1:]:
        candidate = average_states([states[j] for j in [*kept, i]])
        value = score(candidate)
        if value >= best:
            kept.append(i)
            best = value
    return average_states([states[j] for j in kept]), kept, scores


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
