"""The Prometheus counters of what a served film became (diagnosed by which engine, not
assessed, uncertain, unreadable), shared by the API's and the app's metrics so both count the
same way under their own prefix."""

from __future__ import annotations

from collections.abc import Iterable


class ResultCounters:
    """Four counters named ``{prefix}_images...`` in ``registry``."""

    def __init__(self, registry, prefix: str, unreadable_help: str):
        from prometheus_client import Counter

        self.images = Counter(
            f"{prefix}_images",
            "Images that went through the network, by backend and precision.",
            ["backend", "precision"],
            registry=registry,
        )
        self.ood = Counter(
            f"{prefix}_images_ood",
            "Images not assessed: out of distribution.",
            registry=registry,
        )
        self.uncertain = Counter(
            f"{prefix}_images_uncertain",
            "Images assessed with a probability in the model's uncertain band.",
            registry=registry,
        )
        self.unreadable = Counter(f"{prefix}_images_unreadable", unreadable_help, registry=registry)

    def count(self, predictions: Iterable, *, backend: str, precision: str) -> None:
        """Counts predictions by what a clinician sees: unreadable, not assessed, uncertain."""
        for p in predictions:
            if p.error is not None:
                self.unreadable.inc()
                continue
            self.images.labels(backend, precision).inc()
            if p.ood:
                self.ood.inc()
            elif p.uncertain:
                self.uncertain.inc()
