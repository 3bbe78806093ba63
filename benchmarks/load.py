"""The pieces the API benchmarks share: a free loopback port, a process's peak memory, latency
percentiles, and the load generator (keep-alive clients posting one image each)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a running process, in MiB (NaN when /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 1)


def load_test(
    url: str,
    payloads: list[tuple[str, bytes]],
    clients: int,
    seconds: float,
    key: str | None = None,
) -> dict:
    """``clients`` keep-alive clients posting one image each, back to back, for ``seconds``.
    An error is any answer but a 200 whose image was classified."""
    import httpx

    lat, codes, errors, lock = [], {}, [0], threading.Lock()
    stop = time.perf_counter() + seconds
    headers = {"X-API-Key": key} if key else {}

    def client(k: int):
        with httpx.Client(timeout=60.0, headers=headers) as c:
            i = k
            while time.perf_counter() < stop:
                name, data = payloads[i % len(payloads)]
                i += clients
                t = time.perf_counter()
                try:
                    r = c.post(url, files=[("files", (name, data, "image/jpeg"))])
                    code = r.status_code
                    ok = code == 200 and r.json()["results"][0]["error"] is None
                except httpx.HTTPError:
                    code, ok = 0, False
                with lock:
                    lat.append(time.perf_counter() - t)
                    codes[code] = codes.get(code, 0) + 1
                    errors[0] += not ok

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(lat),
        "req_s": round(len(lat) / wall, 1),
        "p50_ms": percentile_ms(lat, 50),
        "p95_ms": percentile_ms(lat, 95),
        "errors": errors[0],
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
    }
