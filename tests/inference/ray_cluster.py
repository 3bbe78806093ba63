"""A real Ray cluster of one or more nodes on this machine, for the Ray tests: each node is a
`ray start --block` process of its own (its own process group), every port a free loopback
port, the session in a temporary folder and token authentication with a token of its own, as
on a cluster of machines. Nodes are stopped by killing their own process group, never with
`ray stop`, which would stop every Ray on the machine."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
SRC = Path(__file__).resolve().parents[2] / "src"
"""The workers import pneumo from this checkout, not from wherever the environment has it."""
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ports() -> list[str]:
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
    ]  # no Ray Client server: it needs ray[client], which pneumo[ray] does not install
    return [f"--{name}={free_port()}" for name in names]


class LocalCluster:
    """Head plus ``add_node()`` workers; ``env`` is what a driver (or `pneumo`) needs to join:
    the token settings, not the address (``address`` gives it)."""

    def __init__(self, root: Path, cpus: int = 1):
        self.root = root
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.nodes: list[subprocess.Popen] = []
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false"], cpus)

    def add_node(self, cpus: int = 1) -> subprocess.Popen:
        return self._start([f"--address={self.address}"], cpus)

    def _start(self, role: list[str], cpus: int) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = str(SRC)
        cwd = self.root / f"node{len(self.nodes)}"  # the raylet's (and its workers') folder
        cwd.mkdir()
        node = subprocess.Popen(
            [RAY, "start", *role, "--block", f"--num-cpus={cpus}", f"--node-ip-address={LOOPBACK}"]
            + [f"--temp-dir={self.root / 'ray'}", "--disable-usage-stats", *_ports()],
            env={**env, **self.env},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=open(cwd / "ray.log", "w"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,
        )
        self.nodes.append(node)
        self.wait_for(len(self.nodes))
        return node

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (-1 while its GCS does not answer)."""
        return self._ask("nodes")

    def drivers(self) -> int:
        """Drivers that ever joined the cluster (this question's own included)."""
        return self._ask("jobs")

    def _ask(self, what: str) -> int:
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1).close()
            out = subprocess.run(
                [sys.executable, "-c", _COUNT, self.address, what],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return -1
        return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout else -1

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.nodes):
                break  # a node exited: its log says why
            if self.alive_nodes() == n:
                return
            time.sleep(0.5)
        logs = "\n".join((self.root / f"node{i}" / "ray.log").read_text()[-1500:] for i in range(n))
        raise RuntimeError(f"the Ray cluster did not reach {n} nodes:\n{logs}")

    @staticmethod
    def kill(node: subprocess.Popen) -> None:
        """The node's processes die at once, as when its machine goes away."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait()

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(node)


_COUNT = """
import sys, logging, ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
if sys.argv[2] == "nodes":
    print(sum(n["Alive"] for n in ray.nodes()))
else:
    from ray._private.state import jobs
    print(len(jobs()))
"""
