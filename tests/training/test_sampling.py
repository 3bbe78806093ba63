"""Which films each epoch draws: ``--class-balance sampler`` must balance the classes, alone
and under torchrun, where every rank draws its own part of one common order."""

from __future__ import annotations

import torch

from pneumo.training.finetune import _train_loader
from pneumo.training.runtime import DistInfo
from pneumo.training.sharding import BalancedShardSampler

LABELS = [0] * 20 + [1] * 180  # one normal film in ten, as skewed as a real clinic's archive


def _normal_share(indices) -> float:
    return sum(LABELS[i] == 0 for i in indices) / len(indices)


def _config(**overrides):
    from pneumo.training.config import TrainConfig

    settings = {"backbone": "test_efficientnet", "batch_size": 8, "workers": 0}
    return TrainConfig(**{**settings, "class_balance": "sampler", **overrides})


def test_sampler_balances_the_classes_in_one_process():
    loader = _train_loader(_config(), list(range(len(LABELS))), LABELS, DistInfo())
    draws = list(loader.sampler)
    assert len(draws) == len(LABELS)
    assert 0.4 < _normal_share(draws) < 0.6  # natural mix: 0.1


def test_loss_weighting_keeps_every_film_once_per_epoch():
    loader = _train_loader(
        _config(class_balance="loss"), list(range(len(LABELS))), LABELS, DistInfo()
    )
    assert sorted(loader.sampler) == list(range(len(LABELS)))


def test_balanced_draws_are_split_between_ranks_of_one_order():
    weights = torch.tensor([9.0 if y == 0 else 1.0 for y in LABELS])
    ranks = [BalancedShardSampler(weights, rank=r, world_size=2, seed=3) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(1)
    first, second = (list(s) for s in ranks)
    assert len(first) == len(second) == len(LABELS) // 2
    assert 0.4 < _normal_share(first + second) < 0.6
    # One draw, dealt out: rank r holds positions r, r + 2, ... of the same sequence.
    common = BalancedShardSampler(weights, rank=0, world_size=1, seed=3)
    common.set_epoch(1)
    merged = [x for pair in zip(first, second, strict=True) for x in pair]
    assert merged == list(common)
    ranks[0].set_epoch(2)
    assert list(ranks[0]) != first  # a new order each epoch


def test_under_torchrun_the_balance_is_kept():
    """DistributedSampler takes no weights; without care the balance is silently lost."""
    dist = DistInfo(rank=1, world_size=2)
    loader = _train_loader(_config(), list(range(len(LABELS))), LABELS, dist)
    loader.sampler.set_epoch(1)
    assert 0.35 < _normal_share(list(loader.sampler)) < 0.65
