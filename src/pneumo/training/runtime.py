"""CPU runtime choices for training: threads, channels_last, bf16 autocast where it is faster,
and torch.distributed set-up when launched by torchrun."""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)


@cache
def cpu_has_bf16() -> bool:
    """AMX or AVX-512 bf16 instructions (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast(enabled: bool, device_type: str = "cpu"):
    """bf16 autocast on ``device_type`` when ``enabled``."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else nullcontext()


def measure_bf16_speedup(
    model, input_size: tuple[int, int], *, batch: int = 8, steps: int = 2
) -> float:
    """Training-step time of fp32 divided by that of bf16 autocast on this CPU (> 1: bf16 faster).

    The model's weights are restored afterwards; the optimiser is not touched.
    """
    import copy

    import torch

    state = copy.deepcopy(model.state_dict())
    x = torch.randn(batch, 3, *input_size).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long)
    timings = {}
    model.train()
    for bf16 in (False, True):
        best = float("inf")
        for step in range(steps + 1):
            start = time.perf_counter()
            with autocast(bf16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if step:  # the first step warms up kernels
                best = min(best, time.perf_counter() - start)
        timings[bf16] = best
    model.load_state_dict(state)
    return timings[False] / timings[True]


RUN_PRECISIONS = ("fp32", "bf16")
"""What a training run resolves its precision to."""


def choose_precision(
    requested: str,
    model,
    input_size,
    *,
    prefer_bf16: bool,
    device: str = "cpu",
    dist: DistInfo | None = None,
) -> str:
    """Resolve ``auto`` to bf16 or fp32 by measuring on this CPU (on a GPU: bf16 where it is
    supported); explicit choices are kept. Under torchrun rank 0 decides and every rank follows:
    measured on each rank, the speed-ups differ (1.30x on one, 0.94x on another) and the ranks
    would train in different precisions."""
    dist = dist or DistInfo()
    if not dist.enabled:
        return _resolve_precision(requested, model, input_size, prefer_bf16, device)
    if dist.is_main:
        choice = _resolve_precision(requested, model, input_size, prefer_bf16, device)
    else:
        choice = None  # the other ranks wait: they neither measure nor decide
    choice = _from_rank_0(choice, device)
    log.debug("rank %d trains in %s (rank 0's choice)", dist.rank, choice)
    return choice


def _from_rank_0(choice: str | None, device: str) -> str:
    """Rank 0's precision on every rank; the tensor lives on the process's device, as NCCL
    requires."""
    import torch

    code = RUN_PRECISIONS.index(choice) if choice is not None else -1
    flag = torch.tensor([code], dtype=torch.long, device=device)
    torch.distributed.broadcast(flag, 0)
    return RUN_PRECISIONS[int(flag)]


def _resolve_precision(requested: str, model, input_size, prefer_bf16: bool, device: str) -> str:
    if device == "cuda" and requested == "auto":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if requested != "auto":
        if requested == "bf16" and not cpu_has_bf16():
            log.warning("this CPU has no native bf16; bf16 autocast will be slow")
        return requested
    if not cpu_has_bf16():
        return "fp32"
    speedup = measure_bf16_speedup(model, input_size)
    choice = "bf16" if speedup > 1.15 else "fp32"
    log.info(
        "bf16 autocast speed-up for training here: %.2fx -> %s%s",
        speedup,
        choice,
        "" if prefer_bf16 or choice == "fp32" else " (unusual for this backbone)",
    )
    return choice


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torch.distributed job (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group set up by ``torchrun`` (gloo on CPU, nccl on GPU), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        # One GPU per process: without this every rank would train on cuda:0.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size())
    # Each process gets its share of the cores, or they fight over them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
    return info
