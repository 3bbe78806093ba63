"""How training films are split between torchrun processes, and the proof that they were:
each epoch's order comes from one seed on every rank, each rank takes its own slice, and at
the end rank 0 records which films each rank saw and a digest of each rank's weights
(``distributed.json``), so a run whose ranks overlapped or drifted apart is visible."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from pneumo.training.runtime import DistInfo

log = logging.getLogger(__name__)

REPORT_FILE = "distributed.json"


class BalancedShardSampler(torch.utils.data.Sampler[int]):
    """Class-balanced draws (with replacement) split between ranks. ``DistributedSampler``
    takes no weights, so under torchrun ``--class-balance sampler`` would otherwise fall back
    to the natural class mix without a word."""

    def __init__(self, weights: torch.Tensor, *, rank: int, world_size: int, seed: int = 0):
        self.weights = weights.double()
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        self.num_samples = len(weights) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.world_size
        draws = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world_size].tolist())


def shard_sampler(dataset, weights: torch.Tensor | None, dist: DistInfo, seed: int):
    """This rank's sampler: torch's ``DistributedSampler`` (disjoint shards, the remainder
    dropped rather than repeated) or, with class-balance weights, ``BalancedShardSampler``."""
    if weights is not None:
        return BalancedShardSampler(weights, rank=dist.rank, world_size=dist.world_size, seed=seed)
    return torch.utils.data.distributed.DistributedSampler(
        dataset,
        num_replicas=dist.world_size,
        rank=dist.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter, in name order. Buffers are left out: batch-norm statistics
    trained with ``--train-bn`` are each rank's own until the next forward broadcasts rank 0's."""
    digest = hashlib.sha256()
    for name, param in sorted(getattr(model, "module", model).named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_report(dist: DistInfo, shards: dict[int, list[int]], model: nn.Module) -> dict | None:
    """Collect every rank's films per epoch and weight digest; rank 0 gets the report.

    ``shared_films`` counts films that more than one rank drew in an epoch: zero for the
    uniform order, and expected above zero for class-balanced draws with replacement."""
    mine = {"rank": dist.rank, "shards": shards, "weights_sha256": weights_digest(model)}
    gathered: list[dict | None] = [None] * dist.world_size
    torch.distributed.all_gather_object(gathered, mine)
    if not dist.is_main:
        return None
    epochs = []
    for epoch in sorted(shards):
        owners = Counter()
        for rank in gathered:
            owners.update(set(rank["shards"][epoch]))
        epochs.append(
            {
                "epoch": epoch,
                "films_per_rank": [len(rank["shards"][epoch]) for rank in gathered],
                "distinct_films": len(owners),
                "shared_films": sum(1 for n in owners.values() if n > 1),
            }
        )
    digests = [rank["weights_sha256"] for rank in gathered]
    report = {
        "world_size": dist.world_size,
        "epochs": epochs,
        "weights_sha256": digests,
        "identical_weights": len(set(digests)) == 1,
    }
    if not report["identical_weights"]:
        log.warning("the ranks ended with different weights: data-parallel training drifted")
    return report


def write_report(report: dict, run_dir: Path) -> None:
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
