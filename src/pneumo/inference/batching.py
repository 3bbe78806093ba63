"""Cross-request micro-batching for servers: concurrent requests of one or a few images each
share one forward pass, which is what makes a CPU fast (a batch of 16 costs far less than 16
batches of one), behind a bounded admission count so overload is answered at once (503) instead
of by an ever longer wait."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np

from pneumo.errors import PneumoError
from pneumo.inference.predictor import Predictor

log = logging.getLogger(__name__)


class Overloaded(PneumoError):
    """More images are in flight than the server admits; try again after ``retry_after`` s."""

    def __init__(self, retry_after: int, limit: int):
        self.retry_after = retry_after
        super().__init__(
            f"server busy: more than {limit} images in flight; retry in {retry_after} s"
        )


class BatchingPredictor(Predictor):
    """Wraps a Predictor: ``forward`` calls from many threads are queued and run together by one
    worker thread, up to ``max_batch`` rows at a time. The first call of a batch waits at most
    ``max_wait_ms`` for others, and only while other admitted requests are still on their way
    (decoding): a lone request is never delayed."""

    def __init__(
        self,
        inner: Predictor,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 2.0,
        max_images: int = 256,
    ):
        self.inner = inner
        self.metadata = inner.metadata
        self.ood_tensors = inner.ood_tensors
        self.batch_size = inner.batch_size
        self.decode_workers = inner.decode_workers
        self.backend = inner.backend
        self.precision = inner.precision
        self.precision_guard = inner.precision_guard
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_images = max_images
        self._lock = threading.Lock()
        self._admitted_images = 0
        self._open_requests = 0
        self._images_per_s = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="pneumo-batcher", daemon=True)
        self._worker.start()

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heatmaps are asked for rarely: straight to the wrapped predictor, unbatched."""
        return self.inner.forward_maps(batch)

    @property
    def ready(self) -> bool:
        """The worker runs and there is room for another image."""
        return self._worker.is_alive() and self._admitted_images < self.max_images

    @property
    def images_in_flight(self) -> int:
        return self._admitted_images

    @property
    def queue_depth(self) -> int:
        """Forward calls waiting for the worker thread (for /metrics)."""
        return self._queue.qsize()

    @contextmanager
    def admit(self, images: int) -> Iterator[None]:
        """Hold room for ``images`` from decoding to answer; raises Overloaded when full (a
        request bigger than the whole limit is admitted alone, when nothing else is in flight)."""
        with self._lock:
            busy = self._admitted_images
            if busy and busy + images > self.max_images:
                raise Overloaded(self._retry_after(busy), self.max_images)
            self._admitted_images += images
            self._open_requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted_images -= images
                self._open_requests -= 1

    def _retry_after(self, busy: int) -> int:
        rate = self._images_per_s or 50.0  # before any measurement: a cautious guess
        return max(1, math.ceil(busy / rate))

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fut: Future = Future()
        self._queue.put((batch, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the worker thread (pending calls are answered first)."""
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _others_on_their_way(self, calls_in_hand: int) -> bool:
        return self._open_requests > calls_in_hand

    def _gather(self, first) -> tuple[list, bool]:
        """``first`` and whatever joins it within the wait; True when asked to stop."""
        items, rows = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or not self._others_on_their_way(len(items)):
                    return items, False
                try:
                    nxt = self._queue.get(timeout=min(left, 0.0005))
                except queue.Empty:
                    continue
            if nxt is None:
                return items, True
            items.append(nxt)
            rows += len(nxt[0])
        return items, False

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            items, stop = self._gather(item)
            start = time.perf_counter()
            try:
                logits, features = self.inner.forward(np.concatenate([b for b, _ in items]))
            except Exception as exc:  # noqa: BLE001 - hand the error to every waiting caller
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            rows = len(logits)
            rate = rows / max(time.perf_counter() - start, 1e-6)
            self._images_per_s = (
                rate if not self._images_per_s else 0.8 * self._images_per_s + 0.2 * rate
            )
            offset = 0
            for b, fut in items:
                stop_at = offset + len(b)
                fut.set_result((logits[offset:stop_at], features[offset:stop_at]))
                offset = stop_at
