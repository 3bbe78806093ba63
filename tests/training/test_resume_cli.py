"""`pneumo train --resume` from the command line after the process was killed mid-run: the
run picks up after its last finished epoch and ends with every epoch recorded once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

EPOCHS = 6


@pytest.mark.slow
def test_killed_training_resumes_from_the_command_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pneumo", "train", "--backbone", "test_efficientnet"]
    cmd += ["--no-pretrained", "--mode", "finetune", "--data", str(tiny_data)]
    cmd += ["--output", str(out), "--epochs", str(EPOCHS), "--batch-size", "8"]
    cmd += ["--workers", "0", "--precision", "fp32", "--val-fraction", "0.25"]
    env = {**os.environ, "PNEUMO_CACHE": str(tmp_path / "cache")}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.json"
    deadline = time.monotonic() + 240
    while not last.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # no clean-up: as a power cut or an OOM kill
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    done_before = json.loads(last.read_text())["epoch"]
    assert 1 <= done_before < EPOCHS
    assert not (out / "model").exists()

    resumed = subprocess.run(
        [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {done_before} of {EPOCHS}" in resumed.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert (out / "model" / "model.json").is_file()
    # One schedule across both processes: a restart from zero would hold fewer steps.
    final = json.loads(last.read_text())
    steps = EPOCHS * (json.loads((out / "config.json").read_text())["n_train"] // 8)
    assert int(final["optimizer_scalars"]["0.step"]) == steps
    assert final["scheduler"]["last_epoch"] == steps


def test_resume_of_a_run_that_never_started_says_so(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "pneumo", "train", "--backbone", "test_efficientnet"]
    cmd += ["--no-pretrained", "--mode", "finetune", "--data", str(tiny_data), "--resume"]
    cmd += ["--output", str(tmp_path / "never"), "--workers", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--resume: no checkpoint in" in done.stderr
