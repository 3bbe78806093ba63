"""Prometheus metrics of one app server process: films classified by backend and precision, how
many were not assessed (out of distribution), uncertain or unreadable, tries to reach the
database that found it unavailable, results waiting in the outbox, and browser sessions.

Streamlit owns its web server and adds no routes, so the metrics have a port of their own
(``pneumo app --metrics-port``, ``$PNEUMO_APP_METRICS_PORT``; off unless asked for), served by
prometheus_client's small HTTP server on the app's own address. It is started once per server
process by ``pneumo.app.server`` before Streamlit runs: the page script, which Streamlit runs
again on every click, only counts. Until it is started every counting function does nothing,
so the app runs without prometheus_client."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable

from pneumo.errors import PneumoError

log = logging.getLogger(__name__)

PORT_ENV = "PNEUMO_APP_METRICS_PORT"
"""The metrics port; unset, empty or 0: no metrics."""
HOST_ENV = "PNEUMO_APP_METRICS_HOST"
"""Where the metrics listen: set by ``pneumo app`` to the app's own ``--host``."""


class AppMetrics:
    """The instruments, in a registry of their own (a test process may hold several)."""

    def __init__(self, pending_results=None, sessions=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        from pneumo.inference.result_counters import ResultCounters

        self.registry = r = CollectorRegistry()
        counters = ResultCounters(
            r, "pneumo_app", "Files or URLs that could not be read as an image."
        )
        self.count_predictions = counters.count
        self.images, self.ood = counters.images, counters.ood
        self.uncertain, self.unreadable = counters.uncertain, counters.unreadable
        self.database_unavailable = Counter(
            "pneumo_app_database_unavailable",
            "Deliveries of the outbox that found the database unavailable (retries included): "
            "rising while the database is down.",
            registry=r,
        )
        if pending_results is not None:
            waiting = Gauge(
                "pneumo_app_outbox_pending_results",
                "Results kept in the outbox, waiting for the database.",
                registry=r,
            )
            waiting.set_function(pending_results)
        if sessions is not None:
            active = Gauge(
                "pneumo_app_sessions", "Browser sessions connected to this server.", registry=r
            )
            active.set_function(sessions)


_started: AppMetrics | None = None
_starting = threading.Lock()


def metrics_port_from_env() -> int | None:
    """``$PNEUMO_APP_METRICS_PORT`` as a port, None when unset or 0; a bad value is refused
    with the variable's name."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise PneumoError(f"{PORT_ENV} must be a port number, got {raw!r}") from None
    check_metrics_port(port, PORT_ENV)
    return port or None


def check_metrics_port(port: int, what: str = "--metrics-port") -> None:
    if not 0 <= port <= 65535:
        raise PneumoError(f"{what} must be in 1..65535 (0: off), got {port}")


def start_metrics_server(port: int, host: str) -> AppMetrics:
    """Serve this process's metrics on ``host:port`` (once: later calls return the same)."""
    global _started
    with _starting:
        if _started is None:
            from prometheus_client import start_http_server

            metrics = AppMetrics(pending_results=_outbox_pending_results, sessions=_sessions)
            start_http_server(port, addr=host, registry=metrics.registry)
            log.info("app metrics on http://%s:%d/metrics", host, port)
            _started = metrics
        return _started


def start_from_env() -> AppMetrics | None:
    """What the server process calls before Streamlit runs: start the metrics when
    ``$PNEUMO_APP_METRICS_PORT`` asks for them."""
    port = metrics_port_from_env()
    if port is None:
        return None
    return start_metrics_server(port, os.environ.get(HOST_ENV) or "localhost")


def count_predictions(predictions: Iterable, *, backend: str, precision: str) -> None:
    if _started is not None:
        _started.count_predictions(predictions, backend=backend, precision=precision)


def count_unreadable(n: int) -> None:
    """Items refused before the network (not an image, too large, a refused URL)."""
    if _started is not None and n:
        _started.unreadable.inc(n)


def count_database_unavailable() -> None:
    if _started is not None:
        _started.database_unavailable.inc()


def _outbox_pending_results() -> float:
    """Read from the journal at each scrape, so results delivered by any replica sharing the
    folder, or left by an earlier run, are counted too."""
    from pneumo.app.outbox import Outbox, OutboxError, default_outbox_dir

    try:
        return float(Outbox(default_outbox_dir()).pending_results())
    except (OutboxError, OSError):
        return math.nan  # unknown, not zero: an alert on the value must not clear


def _sessions() -> float:
    """Browser sessions Streamlit holds now; NaN before its runtime exists."""
    try:
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return 0.0
        return float(Runtime.instance()._session_mgr.num_active_sessions())
    except Exception:  # noqa: BLE001 - Streamlit's session manager is not a public API
        return math.nan
