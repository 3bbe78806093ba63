"""`pneumo app` stops its Streamlit server on SIGTERM (service managers, containers), on Ctrl+C,
and when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# a stand-in for `pneumo app`: run_app's own supervision around a long-running child
LAUNCHER = """
import subprocess, sys
from pneumo.app.launch import _die_with_parent, supervise
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         preexec_fn=_die_with_parent)
print(child.pid, flush=True)
sys.exit(supervise(child, grace_s=5))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _start() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = int(proc.stdout.readline())
    assert _alive(child)
    # The pid is printed just before supervise() installs its handlers; a signal inside that
    # window meets Python's defaults (the child still dies with its parent, by PDEATHSIG).
    time.sleep(0.5)
    return proc, child


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)]
)
def test_signal_to_the_launcher_stops_the_server(sig, code):
    proc, child = _start()
    try:
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code, proc.stderr.read()
        assert _wait_gone(child), "the server outlived `pneumo app`"
        assert "Traceback" not in proc.stderr.read()
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_server_dies_with_a_killed_launcher():
    proc, child = _start()
    try:
        proc.kill()  # kill -9: no handler runs; the kernel tells the child (Linux)
        proc.wait(timeout=30)
        assert _wait_gone(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sigterm_to_pneumo_app_frees_its_port(tiny_model, tmp_path):
    """The campaign's case: `pneumo app` stopped with SIGTERM left Streamlit on its port."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pneumo",
            "app",
            "--port",
            str(port),
            "--model",
            str(tiny_model),
            "--db",
            str(tmp_path / "app.db"),
        ],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.5)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "no Streamlit child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert all(_wait_gone(int(pid)) for pid in children)
        assert not _answers(port)
    finally:
        if proc.poll() is None:
            proc.kill()
