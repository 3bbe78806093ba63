"""Dynamic batching for servers: concurrent requests of one or a few images each are merged
into one forward pass, which is what makes a CPU fast (batch 32 runs several times more images
per second than batch 1)."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

import numpy as np

from pneumo.inference.base import Predictor

log = logging.getLogger(__name__)


class BatchingPredictor(Predictor):
    """Wraps a Predictor: ``forward`` calls from many threads are queued and run together by one
    worker thread, up to ``max_batch`` rows at a time. Nothing waits for a batch to fill: the
    worker takes whatever is queued, so a lone request is not delayed."""

    def __init__(self, inner: Predictor, *, max_batch: int = 32):
        self.inner = inner
        self.metadata = inner.metadata
        self.ood_tensors = inner.ood_tensors
        self.batch_size = inner.batch_size
        self.decode_workers = inner.decode_workers
        self.backend = inner.backend
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="pneumo-batcher", daemon=True)
        self._worker.start()

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fut: Future = Future()
        self._queue.put((batch, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the worker thread (pending calls are answered first)."""
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items, rows = [item], len(item[0])
            while rows < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                items.append(nxt)
                rows += len(nxt[0])
            try:
                logits, features = self.inner.forward(np.concatenate([b for b, _ in items]))
            except Exception as exc:  # noqa: BLE001 - hand the error to every waiting caller
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            start = 0
            for b, fut in items:
                stop = start + len(b)
                fut.set_result((logits[start:stop], features[start:stop]))
                start = stop
