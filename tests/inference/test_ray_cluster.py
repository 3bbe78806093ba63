"""`pneumo predict --ray` beside and on a real Ray cluster of this machine (issues 18 and 19):
bare --ray starts a Ray of its own even with another cluster running and RAY_ADDRESS set;
joining a cluster whose workers work in other folders still reads relative paths; and losing
a node mid-run costs time, never a row or a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import LocalCluster

from pneumo.inference.predict import predict_files

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

SRC = Path(__file__).resolve().parents[2] / "src"
CLI = "import sys; from pneumo.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two 1-CPU nodes on loopback, as two machines would be."""
    pytest.importorskip("ray")
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.add_node()
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def films(real_data_root, tmp_path_factory) -> tuple[Path, list[str], Path]:
    """(folder, 24 paths relative to it with a missing file among them, the local run's CSV
    made from that folder)."""
    here = tmp_path_factory.mktemp("films")
    for cls in ("NORMAL", "PNEUMONIA"):
        (here / cls).mkdir()
        for f in sorted((real_data_root / "val" / cls).glob("*.jpeg"))[:12]:
            (here / cls / f.name).symlink_to(f)
    paths = sorted(str(p.relative_to(here)) for p in here.glob("*/*.jpeg"))
    paths.insert(3, "NORMAL/missing.jpeg")
    cwd = os.getcwd()
    os.chdir(here)
    try:
        predict_files(paths, output=here / "local.csv", progress=False)
    finally:
        os.chdir(cwd)
    return here, paths, here / "local.csv"


def _predict(cwd: Path, args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "predict", *args, "--no-progress"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(run: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate()
        raise AssertionError(f"`pneumo predict --ray` still running after {timeout} s") from None
    return run.returncode, err


def test_bare_ray_starts_its_own_even_with_a_cluster_and_ray_address(cluster, films, tmp_path):
    here, paths, local = films
    drivers = cluster.drivers()
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    code, err = _finish(
        _predict(here, [*paths, "-o", str(tmp_path / "ray.csv"), "--ray"], env), 120
    )
    assert code == 0, err[-3000:]
    assert (tmp_path / "ray.csv").read_bytes() == local.read_bytes()
    assert cluster.drivers() == drivers + 1  # only the question itself joined the cluster


def test_joining_a_cluster_reads_relative_paths_from_the_callers_folder(cluster, films, tmp_path):
    """The cluster's workers run in their nodes' folders, not ours: the rows must not differ."""
    here, paths, local = films
    args = [*paths, "-o", str(tmp_path / "ray.csv"), "--ray", cluster.address]
    code, err = _finish(_predict(here, args, cluster.env), 120)
    assert code == 0, err[-3000:]
    assert (tmp_path / "ray.csv").read_bytes() == local.read_bytes()


@pytest.mark.timeout(240)
def test_losing_a_node_mid_run_finishes_with_every_row(cluster, films, tmp_path):
    """The worker node dies (all its processes at once) while rows are coming: the run ends
    within a bounded time with every row, in order, as on one machine."""
    here, paths, local = films
    out = tmp_path / "ray.csv"
    args = [*paths * 2, "-o", str(out), "--ray", cluster.address, "--batch-size", "2"]
    run = _predict(here, [*args, "--timeout", "60"], cluster.env)
    deadline = time.monotonic() + 90
    while run.poll() is None and time.monotonic() < deadline:  # until rows are being written
        partial = list(tmp_path.glob("ray.csv.*.tmp"))
        if partial and partial[0].read_text().count("\n") > 3:
            break
        time.sleep(0.1)
    assert run.poll() is None, "the run ended before the node could be lost"
    cluster.kill(cluster.nodes[1])
    code, err = _finish(run, 150)
    assert code == 0, err[-3000:]
    rows = local.read_text().splitlines()
    assert out.read_text().splitlines() == rows + rows[1:]
