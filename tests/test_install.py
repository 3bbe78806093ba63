"""`make app` / `make install` on a fresh clone: the first install takes minutes, so every step
says what it is doing and pip's own progress is not silenced."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["install", "app"])
def test_a_first_install_announces_each_step_and_shows_pips_progress(target, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "fresh-venv"  # absent: make plans the whole first install
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    pips = [i for i, line in enumerate(plan) if " -m pip install" in line]
    assert len(pips) == 2, plan
    assert not any("--quiet" in plan[i] or " -q" in plan[i] for i in pips)
    for i in pips:  # each pip run is announced just before it starts
        assert plan[i - 1].startswith('echo "==> ['), plan[i - 1]
    assert any(line.startswith('echo "==> installed') for line in plan[pips[-1] :])
