"""`pneumo app` stops its Streamlit server on SIGTERM (service managers, containers), on Ctrl+C,
and when it is killed outright."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# A stand-in for `pneumo app`: run_app's own supervision around a child that behaves as the
# Streamlit server under `pneumo.app.server` does: it stops when its stdin (held by the launcher)
# ends, and its SIGTERM handler writes to its output, as Streamlit's "Stopping..." does.
CHILD = """
import signal, sys, time
from pneumo.app.server import DropWhenClosed, stop_when_stdin_closes
sys.stdout = DropWhenClosed(sys.stdout)
stop_when_stdin_closes()
def stop(signum, frame):
    print("  Stopping...", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("serving", flush=True)
time.sleep(600)
"""
LAUNCHER = f"""
import subprocess, sys
from pneumo.app.launch import supervise
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
sys.stderr.write(f"{{child.pid}}\\n")
sys.stderr.flush()
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


def _start(**popen) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    child = int(proc.stderr.readline())
    assert _alive(child)
    # relayed by supervise(), so its handlers are in place
    assert select.select([proc.stdout], [], [], 30)[0], "the server's output was not relayed"
    assert proc.stdout.readline() == "serving\n"
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


def test_sigint_stops_the_app_even_when_the_parent_ignores_it():
    """`make test &` (or any background job) starts with SIGINT ignored, and the launcher
    inherited that: `kill -INT` (Ctrl+C) then did nothing."""
    proc, child = _start(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert _wait_gone(child), "the server outlived `pneumo app`"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_server_dies_with_a_killed_launcher():
    proc, child = _start()
    try:
        proc.kill()  # kill -9: no handler runs; the server sees its stdin end
        proc.wait(timeout=30)
        assert _wait_gone(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_closed_output_stops_the_app():
    """`pneumo app | head -5`: once head has exited, the launcher stops the server and exits
    as a program stopped by SIGPIPE would (141), without waiting for something to write."""
    proc, child = _start()
    try:
        proc.stdout.close()
        assert proc.wait(timeout=30) == 128 + signal.SIGPIPE
        assert _wait_gone(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_streamlit_honours_sigterm_with_its_output_closed(tmp_path):
    """The real Streamlit server run by `pneumo.app.server`: with nobody reading its output it
    still stops on SIGTERM (plain `streamlit run` raised BrokenPipeError printing "Stopping..."
    in its handler, and kept serving)."""
    page = tmp_path / "page.py"
    page.write_text("import streamlit as st\nst.write('hello')\n")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pneumo.app.server", "run", str(page), "--server.port", str(port)]
        + ["--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for line in server.stdout:  # the URL is printed just before the handlers are set
            if b"URL:" in line:
                break
        assert _answers(port), "no server"
        time.sleep(0.5)
        server.stdout.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert not _answers(port)
    finally:
        if server.poll() is None:
            server.kill()


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
        from pneumo.storage.db import check_database

        check_database(tmp_path / "app.db")  # migrated at start, before any page was viewed
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "no Streamlit child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert all(_wait_gone(int(pid)) for pid in children)
        assert not _answers(port)
    finally:
        if proc.poll() is None:
            proc.kill()
