"""Under torchrun every rank trains in the precision rank 0 chose: measured on each rank, the
bf16 speed-ups differed (rank 0 1.30x -> bf16, rank 1 0.94x -> fp32) and the ranks trained in
different precisions while config.json recorded one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

RANK = """
import json, sys
from pathlib import Path

import pneumo.training.runtime as runtime
from pneumo.models.registry import create_model

speedups = json.loads(sys.argv[2])
dist = runtime.init_distributed()
measured = []

def measure(*args, **kwargs):  # this rank's own measurement, as a busy machine gives them
    measured.append(dist.rank)
    return speedups[dist.rank]

runtime.cpu_has_bf16 = lambda: True
runtime.measure_bf16_speedup = measure
model = create_model("test_efficientnet", pretrained=False)
choice = runtime.choose_precision("auto", model, (64, 64), prefer_bf16=True, dist=dist)
out = {"choice": choice, "measured": bool(measured)}
Path(sys.argv[1], f"rank{dist.rank}.json").write_text(json.dumps(out))
"""


@pytest.mark.parametrize(("speedups", "agreed"), [([1.30, 0.94], "bf16"), ([0.94, 1.30], "fp32")])
def test_every_rank_takes_rank_0s_precision(tmp_path, speedups, agreed):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(script), str(tmp_path), json.dumps(speedups)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["choice"] for r in ranks] == [agreed, agreed]
    assert [r["measured"] for r in ranks] == [True, False]  # rank 1 neither measures nor decides
