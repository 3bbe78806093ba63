"""Batch prediction on Ray (issue 12): a local Ray with 2 CPUs writes the very rows the local
path writes for real films and bad files, in CSV, JSON and Parquet, and a model worker killed
mid-run still leaves every row exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pneumo.inference.predict import predict_files
from pneumo.inference.ray_predict import predict_with_ray
from pneumo.inference.rows import read_rows

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

MODEL_WORKER = "ray::MapWorker(MapBatches(_PredictActor))"
"""Process title of a model actor; ``.submit`` is appended while it runs a batch."""


@pytest.fixture(scope="module")
def local_ray():
    import ray  # a dev dependency: missing, these tests fail rather than skip

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(real_data_root, tmp_path_factory) -> list[str]:
    """40 real films (val and train, both classes) with a corrupt file, a text file named like
    a film, a missing file and an empty folder among them."""
    bad = tmp_path_factory.mktemp("bad")
    films = []
    for split, per_class in (("val", 8), ("train", 12)):
        for cls in ("NORMAL", "PNEUMONIA"):
            films += sorted((real_data_root / split / cls).glob("*.jpeg"))[:per_class]
    truncated = bad / "truncated.jpeg"
    truncated.write_bytes(films[0].read_bytes()[:3000])
    (bad / "notes.png").write_text("not an image")
    (bad / "empty").mkdir()
    paths = [str(p) for p in films]
    paths[5:5] = [str(truncated), str(bad / "notes.png")]
    paths[20:20] = [str(bad / "missing.jpeg"), str(bad / "empty")]
    return paths


@pytest.fixture(scope="module")
def local_csv(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "rows.csv"
    predict_files(inputs, output=out, progress=False)
    return out


def test_ray_rows_are_the_local_rows(local_ray, inputs, local_csv, tmp_path):
    summary = predict_with_ray(inputs, output=tmp_path / "rows.csv", progress=False)
    assert (tmp_path / "rows.csv").read_bytes() == local_csv.read_bytes()
    rows = read_rows(local_csv)
    assert len(rows) == len(inputs) == summary.total
    errors = [r["path"] for r in rows if r["error"]]
    assert len(errors) == summary.errors == 4  # each bad input in its own row
    assert all(r["class"] in ("NORMAL", "PNEUMONIA") for r in rows if not r["error"])

    predict_files(inputs, output=tmp_path / "local.json", progress=False)
    predict_with_ray(inputs, output=tmp_path / "rows.json", progress=False)
    assert (tmp_path / "rows.json").read_bytes() == (tmp_path / "local.json").read_bytes()

    import pyarrow.parquet as pq

    predict_with_ray(inputs, output=tmp_path / "rows.parquet", progress=False)
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.to_pylist() == read_rows(tmp_path / "local.json")


def _model_workers(busy: bool) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, UnicodeDecodeError):
            continue
        if title.startswith(MODEL_WORKER) and (not busy or title.endswith(".submit")):
            found.append(int(pid))
    return found


@pytest.mark.timeout(300)
def test_a_model_worker_killed_mid_run_loses_no_row(local_ray, inputs, local_csv, tmp_path):
    out = tmp_path / "rows.csv"
    failure = []

    def run():
        try:
            predict_with_ray(inputs, output=out, batch_size=2, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    driver = threading.Thread(target=run)
    driver.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and driver.is_alive() and time.monotonic() < deadline:
        busy = _model_workers(busy=True)  # in the middle of a batch
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    driver.join(timeout=240)
    assert killed is not None, "no model worker was seen running a batch"
    assert not driver.is_alive(), "the run did not finish after its worker was killed"
    assert not failure, failure
    assert out.read_bytes() == local_csv.read_bytes()  # every row once, in order, as local
