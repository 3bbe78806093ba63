"""Weight averaging that holds up under distribution shift, and what it needs afterwards.

- EMA of weights during fine-tuning (a cheap cousin of SWA: Izmailov et al. 2018).
- WiSE-FT (Wortsman et al. 2022): interpolate the starting weights (ImageNet backbone + linear
  probe head) and the fine-tuned ones; the mix keeps more of the general features.
- Greedy soups (Wortsman et al. 2022): average fine-tunes that share one start.

An average of weights is a new network whose activations no longer match any run's running
statistics: ``pneumo.training.batchnorm`` re-estimates them for runs that trained them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
