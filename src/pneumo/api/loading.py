"""The model behind the API, loaded in the background after the port is bound: until it serves,
/v1/health says "loading" (alive) and /v1/ready and predictions answer 503 with the reason, so a
load balancer sees a starting replica instead of a closed port."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pneumo.api.settings import ApiSettings

if TYPE_CHECKING:
    from pneumo.inference.batching import BatchingPredictor

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What a client is told to wait while the model loads."""


@dataclass
class ModelSlot:
    """The served predictor once ready; until then, why not (``failed`` when it never will)."""

    predictor: BatchingPredictor | None = None
    reason: str = "the model is not loaded yet"
    failed: bool = False
    _child: subprocess.Popen | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)

    def fill(self, inner, settings: ApiSettings) -> None:
        """Serve ``inner`` (a loaded Predictor), batching concurrent requests."""
        from pneumo.inference.batching import BatchingPredictor

        self.predictor = BatchingPredictor(
            inner, max_wait_ms=settings.batch_wait_ms, max_images=settings.queue_images
        )
        self.reason = ""
        log.info("serving %s on %s %s", inner.metadata.backbone, inner.backend, inner.precision)

    def load_in_background(self, settings: ApiSettings) -> threading.Thread:
        """Prepare (first use on this machine), load and warm the model in a thread."""
        self._stopping = False
        thread = threading.Thread(
            target=self._load, args=(settings,), name="pneumo-model-loader", daemon=True
        )
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the batcher, or a preparation still running."""
        self._stopping = True
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
        if self.predictor is not None:
            self.predictor.close()
            self.predictor = None

    def _load(self, settings: ApiSettings) -> None:
        from pneumo.inference.engine import load_predictor

        try:
            self._prepare_apart(settings)
            self.reason = "loading the model"
            inner = load_predictor(
                settings.model_dir,
                backend=settings.backend,
                precision=settings.precision,
                threads=settings.threads,
            )
            self.reason = "warming the model up"
            _warm_up(inner)
            if not self._stopping:
                self.fill(inner, settings)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised away
            if self._stopping:
                return
            self.failed = True
            # the cause names server paths: it goes to the log, not to unauthenticated probes
            self.reason = "the model failed to load (the server's log says why)"
            log.error("the model failed to load: %s", exc)

    def _prepare_apart(self, settings: ApiSettings) -> None:
        """A first use's one-off work (ONNX export with torch, the accuracy guard with NNCF) in
        a child process, so this one never imports torch; one worker at a time (a file lock),
        the others then find it cached."""
        import fcntl

        from pneumo.cache import cache_dir
        from pneumo.errors import PneumoError
        from pneumo.inference.engine import model_prepared
        from pneumo.models.checkpoint import resolve_model_dir

        model_dir = str(resolve_model_dir(settings.model_dir))
        backend, precision = settings.backend, settings.precision
        if model_prepared(model_dir, backend=backend, precision=precision):
            return
        self.reason = "preparing the model for this machine (first use: export, accuracy guard)"
        cache_dir().mkdir(parents=True, exist_ok=True)
        with open(cache_dir() / "serve-prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if model_prepared(model_dir, backend=backend, precision=precision):
                return
            code = (
                "import logging, sys\n"
                "logging.basicConfig(level=logging.INFO, "
                "format='%(levelname)s %(name)s: %(message)s')\n"
                "from pneumo.inference.engine import prepare_model\n"
                "prepare_model(sys.argv[1], backend=sys.argv[2], precision=sys.argv[3])\n"
            )
            self._child = subprocess.Popen(
                [sys.executable, "-c", code, model_dir, backend, precision]
            )
            status = self._child.wait()
            self._child = None
        if status != 0:
            raise PneumoError(f"{model_dir}: preparing the model for serving failed (see above)")


def _warm_up(predictor) -> None:
    """One forward pass on a blank batch: the first request does not pay for lazy
    initialisation (graph compilation, thread pools, memory arenas)."""
    import numpy as np

    h, w = predictor.metadata.data_config.input_size
    predictor.forward(np.zeros((1, 3, h, w), dtype=np.float32))
