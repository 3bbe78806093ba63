"""Delivery of results to the destination by C-STORE, from the outbox on disk. A destination
that is down costs nothing but time: results stay in the outbox and are tried again after a
wait that doubles with each failure (up to ``retry_max_s``), and each failure is logged with
how many results are waiting."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path

from pneumo.dicom_node.config import NodeConfig
from pneumo.dicom_node.spool import Spool, instance_file_name, write_atomically

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still sent by old systems)
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
]
"""Transfer syntaxes the node accepts: those ``pneumo.data.dicom`` decodes."""
RESULT_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
"""Results are written explicit VR little endian; implicit is offered too."""


class Outbox:
    """Results waiting for delivery, one file each, and the thread that delivers them."""

    def __init__(self, spool: Spool, config: NodeConfig):
        self.spool = spool
        self.config = config
        self.state = spool.read_state()
        self.state.destination = str(config.destination or "")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, dataset) -> Path:
        """Journal one result object; it is sent on the next pass."""
        buf = io.BytesIO()
        dataset.save_as(buf, enforce_file_format=True)
        path = self.spool.outbox / instance_file_name(str(dataset.SOPInstanceUID))
        write_atomically(path, buf.getvalue())
        self._wake.set()
        return path

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pneumo-dicom-send", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.state.next_try - time.time() if self.state.failures else 0.0
            if wait > 0:
                self._wake.wait(min(wait, 1.0))
                self._wake.clear()  # new results do not cut a back-off short
                continue
            files = self.spool.waiting(self.spool.outbox)
            if not files or self.config.destination is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.send_pass(files)

    def send_pass(self, files: list[Path]) -> bool:
        """Send ``files`` in one association; True when all were delivered. On a failure the
        rest wait in the outbox for the next try, after a back-off."""
        try:
            self._send(files)
        except DeliveryError as exc:
            self._failed(str(exc))
            return False
        if self.state.failures:
            log.info("destination %s reachable again", self.config.destination)
        self.state.failures, self.state.last_error, self.state.next_try = 0, "", 0.0
        self.spool.write_state(self.state)
        return True

    def _failed(self, reason: str) -> None:
        s, c = self.state, self.config
        s.failures += 1
        wait = min(c.retry_first_s * 2 ** (s.failures - 1), c.retry_max_s)
        s.last_error, s.next_try = reason, time.time() + wait
        self.spool.write_state(s)
        log.warning(
            "cannot deliver to %s (%s): %d results kept in the outbox, next try in %.0f s",
            c.destination,
            reason,
            len(self.spool.waiting(self.spool.outbox)),
            wait,
        )

    def _send(self, files: list[Path]) -> None:
        from pydicom import dcmread
        from pynetdicom import AE

        dest = self.config.destination
        assert dest is not None
        datasets = [(path, dcmread(path)) for path in files]
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for uid in sorted({str(ds.SOPClassUID) for _, ds in datasets}):
            ae.add_requested_context(uid, RESULT_SYNTAXES)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            raise DeliveryError("association refused or destination unreachable")
        try:
            for path, ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise DeliveryError("no answer to C-STORE (connection lost)")
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning
                    raise DeliveryError(f"C-STORE refused with status 0x{code:04X}")
                path.unlink(missing_ok=True)
                self.state.delivered += 1
                log.info("sent %s %s to %s", ds.Modality, ds.SOPInstanceUID, dest)
        finally:
            assoc.release()


class DeliveryError(Exception):
    """A pass could not deliver everything (the rest stays in the outbox)."""
