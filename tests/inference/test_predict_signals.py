"""`pneumo predict` stopped mid-run (SIGTERM from kill, a service manager or a container; SIGINT
from Ctrl+C) leaves neither the output nor its temporary file, and says so in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _wait_for_rows(tmp_dir: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the run has written rows to its temporary file (it is mid-run then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        for tmp in tmp_dir.glob("out.csv.*.tmp"):
            if tmp.read_text().count("\n") > 2:
                return
        time.sleep(0.05)
    pytest.fail("no rows written in time")


@pytest.mark.parametrize(
    ("sig", "code", "message"),
    [(signal.SIGTERM, 128 + signal.SIGTERM, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_stopped_predict_leaves_no_files(tiny_model, xray_files, tmp_path, sig, code, message):
    listing = tmp_path / "list.csv"  # one film many times: a run long enough to stop
    listing.write_text("path\n" + f"{xray_files[0]}\n" * 100_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "predict", str(listing), "--model", str(tiny_model)]
        + ["--backend", "onnx", "--output", str(out_dir / "out.csv"), "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_rows(out_dir, proc)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code
    assert list(out_dir.iterdir()) == []  # neither out.csv nor out.csv.<pid>.tmp
    assert stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in stderr
