"""Servers that tests start as real processes, and how they are stopped."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started (its
    own process group): SIGTERM first, SIGKILL if it does not go."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
