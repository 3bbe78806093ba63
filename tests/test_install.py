"""`make app` / `make test` on a fresh clone: the first install takes minutes, so every step
says what it is doing and pip's own progress is not silenced. `make app` installs only what
serving needs (no torch); `make test` adds the rest, and `make app` after it installs nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _plan(target: str, venv: Path) -> list[str]:
    """What ``make target`` would run (make -n), for the virtual environment ``venv``."""
    return subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()


def _pips(plan: list[str]) -> list[int]:
    return [i for i, line in enumerate(plan) if " -m pip install" in line]


@pytest.fixture(autouse=True)
def _make_installed():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")


@pytest.mark.parametrize(("target", "steps"), [("app", 1), ("test", 2), ("install", 2)])
def test_a_first_install_announces_each_step_and_shows_pips_progress(target, steps, tmp_path):
    plan = _plan(target, tmp_path / "fresh-venv")  # absent: make plans the whole first install
    pips = _pips(plan)
    assert len(pips) == steps, plan
    assert not any("--quiet" in plan[i] or " -q" in plan[i] for i in pips)
    for i in pips:  # each pip run is announced just before it starts
        assert plan[i - 1].startswith('echo "==> ['), plan[i - 1]
    assert any(line.startswith('echo "==> installed') for line in plan[pips[-1] :])


def test_make_app_installs_no_torch_and_make_test_does(tmp_path):
    app = "\n".join(_plan("app", tmp_path / "v"))
    assert "torch" not in app.replace("no torch", "") and '".[app,openvino]"' in app
    test = _plan("test", tmp_path / "v")
    pips = [test[i] for i in _pips(test)]
    assert '"torch==' in pips[0] and '".[dev]"' in pips[1]


def test_make_test_after_make_app_adds_the_rest_and_make_app_after_it_nothing(tmp_path):
    venv = tmp_path / "v"
    venv.mkdir()
    newer = time.time() + 60  # newer than pyproject.toml, as after a real install
    (venv / ".installed-app").touch()
    os.utime(venv / ".installed-app", (newer, newer))
    assert _pips(_plan("app", venv)) == []  # the app's part is installed
    assert len(_pips(_plan("test", venv))) == 2  # torch and the dev extras come next
    (venv / ".installed-dev").touch()
    os.utime(venv / ".installed-dev", (newer, newer))
    assert _pips(_plan("test", venv)) == [] and _pips(_plan("app", venv)) == []
