"""The running node: the SCP receiving, one worker classifying in arrival order, the outbox
delivering. Films left in the inbox and results left in the outbox by an earlier run (a crash,
a restart) are taken up again at start."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from pneumo.dicom_node.config import NodeConfig
from pneumo.dicom_node.spool import Spool

log = logging.getLogger(__name__)


class DicomNode:
    """Start with ``start()`` (or ``with``); ``stop()`` finishes the film in hand and stops.
    ``predictor`` and ``cam`` may be given (shared with a caller); else they are loaded."""

    def __init__(self, config: NodeConfig, *, predictor=None, cam=None, session_factory=None):
        from pneumo.dicom_node.sender import Outbox

        self.config = config
        self.spool = Spool(config.spool_dir)
        self.outbox = Outbox(self.spool, config)
        self.films: queue.Queue[Path] = queue.Queue(maxsize=config.queue_size)
        self.predictor = predictor
        self.cam = cam
        self.session_factory = session_factory
        self.server = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.classified = 0
        """Instances classified by this run."""

    @property
    def port(self) -> int:
        """The port listened on (the real one when the config asked for port 0)."""
        return self.server.server_address[1] if self.server else self.config.port

    def start(self) -> DicomNode:
        from pneumo.dicom_node.process import already_done
        from pneumo.dicom_node.receive import make_store_handler, start_scp

        self._load()
        leftover = self.spool.waiting(self.spool.inbox)
        if leftover:
            log.info("%d films left from an earlier run: classifying them first", len(leftover))
        self._worker = threading.Thread(
            target=self._work, args=(leftover,), name="pneumo-dicom-classify", daemon=True
        )
        self._worker.start()
        self.outbox.start()
        handler = make_store_handler(
            self.spool, self.films, lambda uid: already_done(self.session_factory, uid)
        )
        self.server = start_scp(self.config, handler)
        return self

    def _load(self) -> None:
        if self.predictor is None:
            from pneumo.inference.engine import load_predictor

            self.predictor = load_predictor(self.config.model, backend=self.config.backend)
        if self.cam is None and self.config.heatmaps:
            self.cam = self.predictor  # its exported graph draws the class activation map
        if self.session_factory is None:
            from pneumo.storage.db import open_database

            self.session_factory = open_database(self.config.db)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=60)
        self.outbox.stop()

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _work(self, leftover: list[Path]) -> None:
        for path in leftover:
            self._handle(path)
        while not self._stop.is_set():
            try:
                path = self.films.get(timeout=0.5)
            except queue.Empty:
                continue
            self._handle(path)

    def _handle(self, path: Path) -> None:
        """Classify one inbox file, journal its results to the outbox, then drop the film.
        A film that fails unexpectedly stays in the inbox for the next start."""
        from pneumo.dicom_node.process import classify_instance

        start = time.perf_counter()
        try:
            outcome = classify_instance(
                path.read_bytes(), self.predictor, self.cam, self.session_factory
            )
        except Exception:  # noqa: BLE001 - one bad film must not stop the node
            log.exception("could not process inbox file %s; kept for the next start", path.name)
            return
        for result in outcome.results:
            self.outbox.put(result)
        path.unlink(missing_ok=True)
        if outcome.prediction is None:
            log.info("instance %s: %s", outcome.sop_uid, outcome.note)
            return
        self.classified += 1
        pred = outcome.prediction
        reason = f" ({pred.ood_reason or pred.error})" if pred.label is None else ""
        log.info(
            "instance %s: pneumonia %s%s in %.2f s; %d result objects queued",
            outcome.sop_uid,
            outcome.note,
            reason,
            time.perf_counter() - start,
            len(outcome.results),
        )


def run_node(config: NodeConfig) -> int:
    """Receive chest radiographs from PACS over DICOM and send the results back.

    A DICOM Storage SCP: each film received by C-STORE is classified by the same engine as
    `pneumo predict` (films that are not frontal chest radiographs, and colour pictures, are
    "not assessed"), stored as a record of the patient in its header, and answered with a
    Comprehensive SR and, for a diagnosed film, a heatmap overlay (secondary capture), both
    in the film's study, sent by C-STORE to --destination. Films and results are journaled
    on disk (--spool) and retried with back-off while the destination is down. Runs until
    interrupted (Ctrl+C or SIGTERM). Research use only.
    """
    with DicomNode(config):
        while True:
            time.sleep(3600)
