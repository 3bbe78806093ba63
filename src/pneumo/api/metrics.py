"""Prometheus metrics of one serving process (``GET /metrics``, text format): requests by route
and status, latency, the batching queue, images by precision, and how many were out of
distribution, uncertain or unreadable. Each app has its own registry, so apps made in one
process (tests, embedding) never share counts."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pneumo.inference.result_counters import ResultCounters

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: one film on a warm CPU takes ~15 ms; a full queue under load, seconds."""


class ApiMetrics:
    """The instruments, registered in their own ``registry``."""

    def __init__(self, slot):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pneumo_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "pneumo_http_request_duration_seconds",
            "Time from the request's headers to the end of its answer, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        counters = ResultCounters(r, "pneumo", "Files that could not be read as an image.")
        self.count_predictions = counters.count
        self.images, self.ood = counters.images, counters.ood
        self.uncertain, self.unreadable = counters.uncertain, counters.unreadable
        in_flight = Gauge(
            "pneumo_images_in_flight",
            "Images admitted and not yet answered (503 beyond PNEUMO_QUEUE_IMAGES).",
            registry=r,
        )
        in_flight.set_function(lambda: _predictor_value(slot, "images_in_flight"))
        queue = Gauge(
            "pneumo_batch_queue_depth",
            "Forward calls waiting for the batching worker.",
            registry=r,
        )
        queue.set_function(lambda: _predictor_value(slot, "queue_depth"))
        ready = Gauge("pneumo_model_ready", "1 once the model is loaded and warmed.", registry=r)
        ready.set_function(lambda: float(slot.predictor is not None))


def _predictor_value(slot, name: str) -> float:
    predictor = slot.predictor
    return 0.0 if predictor is None else float(getattr(predictor, name))


class RequestMetrics:
    """Pure ASGI middleware: counts every answer (the guards' refusals too) by route and times
    it. ``routes`` are the app's paths (none has parameters); any other path is counted as
    "other", so a scanner cannot grow the label set."""

    def __init__(self, app, metrics: ApiMetrics, routes: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the server answers when the app raises before answering

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            label = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
