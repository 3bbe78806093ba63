"""Batch prediction on Ray (issue 12): a local Ray with 2 CPUs writes the very rows the local
path writes for real films and bad files, in CSV, JSON and Parquet (the local path writes all
three too), and a model worker killed mid-run still leaves every row exactly once. A Ray
cluster of several nodes: test_ray_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pneumo.inference.predict import predict_files
from pneumo.inference.rows import read_rows
from synthetic import colour_photo

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

SRC = Path(__file__).resolve().parents[2] / "src"
MODEL_WORKER = "ray::MapWorker(MapBatches(_PredictActor))"
"""Process title of a model actor; ``.submit`` is appended while it runs a batch."""

DRIVER = """
import json, sys
import ray
from pneumo.inference.ray_predict import predict_with_ray

inputs, batch_size, outputs = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
for output in outputs:
    summary = predict_with_ray(inputs, output=output, batch_size=batch_size, progress=False)
    print(summary.total, summary.errors, flush=True)
"""


def _start_driver(inputs: list[str], outputs: list[Path], batch_size: int = 8):
    """The Ray driver in a process of its own, with a local 2-CPU Ray: Ray's threads and
    signal handlers never enter the test process."""
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(inputs), str(batch_size), *map(str, outputs)],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(driver, timeout: float = 240) -> list[str]:
    try:
        out, err = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
        raise AssertionError("the Ray run did not finish") from None
    assert driver.returncode == 0, err[-3000:]
    return out.split()


@pytest.fixture(scope="module")
def inputs(real_data_root, tmp_path_factory) -> list[str]:
    """40 real films (val and train, both classes) with a corrupt file, a text file named like
    a film, a colour photo, a missing file and an empty folder among them."""
    bad = tmp_path_factory.mktemp("bad")
    films = []
    for split, per_class in (("val", 8), ("train", 12)):
        for cls in ("NORMAL", "PNEUMONIA"):
            films += sorted((real_data_root / split / cls).glob("*.jpeg"))[:per_class]
    truncated = bad / "truncated.jpeg"
    truncated.write_bytes(films[0].read_bytes()[:3000])
    (bad / "notes.png").write_text("not an image")
    (bad / "empty").mkdir()
    colour_photo().save(bad / "chelsea_cat.png")  # flagged out of distribution: no diagnosis
    paths = [str(p) for p in films]
    paths[5:5] = [str(truncated), str(bad / "notes.png"), str(bad / "chelsea_cat.png")]
    paths[20:20] = [str(bad / "missing.jpeg"), str(bad / "empty")]
    return paths


@pytest.fixture(scope="module")
def local_csv(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "rows.csv"
    predict_files(inputs, output=out, progress=False)
    return out


def test_ray_rows_are_the_local_rows(inputs, local_csv, tmp_path):
    outputs = [tmp_path / "rows.csv", tmp_path / "rows.json", tmp_path / "rows.parquet"]
    counts = _finish(_start_driver(inputs, outputs))
    assert outputs[0].read_bytes() == local_csv.read_bytes()
    rows = read_rows(local_csv)
    assert len(rows) == len(inputs)
    errors = [r["path"] for r in rows if r["error"]]
    assert len(errors) == 4  # each bad input in its own row
    assert counts == [str(len(inputs)), "4"] * 3  # the summaries say so too
    (cat,) = [r for r in rows if r["ood"] == "True"]
    assert cat["path"].endswith("chelsea_cat.png") and cat["ood_reason"]
    assert (cat["class"], cat["probability"], cat["confidence"]) == ("", "", "")
    assert all(r["class"] in ("NORMAL", "PNEUMONIA") for r in rows if not r["error"] and r != cat)

    predict_files(inputs, output=tmp_path / "local.json", progress=False)
    assert outputs[1].read_bytes() == (tmp_path / "local.json").read_bytes()

    import pyarrow.parquet as pq

    predict_files(inputs, output=tmp_path / "local.parquet", progress=False)
    assert pq.read_table(outputs[2]) == pq.read_table(tmp_path / "local.parquet")  # and types
    assert pq.read_table(outputs[2]).to_pylist() == read_rows(tmp_path / "local.json")


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _busy_model_workers(driver_pid: int) -> list[int]:
    """Model actors of this run (descendants of its driver) in the middle of a batch."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, UnicodeDecodeError):
            continue
        if not (title.startswith(MODEL_WORKER) and title.endswith(".submit")):
            continue
        ancestor = pid
        while ancestor > 1 and ancestor != driver_pid:
            ancestor = _parent(ancestor)
        if ancestor == driver_pid:
            found.append(pid)
    return found


@pytest.mark.timeout(300)
def test_a_model_worker_killed_mid_run_loses_no_row(inputs, local_csv, tmp_path):
    out = tmp_path / "rows.csv"
    driver = _start_driver(inputs, [out], batch_size=2)
    killed = None
    deadline = time.monotonic() + 150
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        busy = _busy_model_workers(driver.pid)
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _finish(driver)
    assert killed is not None, "no model worker was seen running a batch"
    assert out.read_bytes() == local_csv.read_bytes()  # every row once, in order, as local


CLI = (
    "import sys; from pneumo.cli import main; code = main(sys.argv[1:]); "
    "print('ray' in sys.modules); sys.exit(code)"
)


def test_predict_ray_flag_writes_the_rows_of_the_local_path(inputs, tmp_path):
    """`pneumo predict --ray` (a local Ray for the run) writes the bytes the plain command
    writes, and only the flag loads Ray."""

    def predict(output: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", CLI, "predict", *inputs[:12], "-o", str(output)]
        return subprocess.run(
            [*cmd, "--no-progress", *extra],
            env=dict(os.environ, PYTHONPATH=str(SRC)),
            capture_output=True,
            text=True,
            timeout=300,
        )

    local, on_ray = predict(tmp_path / "local.csv"), predict(tmp_path / "ray.csv", "--ray")
    assert local.returncode == 0, local.stderr[-2000:]
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert (local.stdout.split()[-1], on_ray.stdout.split()[-1]) == ("False", "True")
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert "10 of 12 images classified" in on_ray.stderr
