"""The Storage SCP: accepts C-STORE and C-ECHO, journals each instance to the inbox and queues
it for classification. PACS hears "stored" only once the film is safe on disk; when the queue
is full it hears "out of resources" and retries later, so a burst never fills the memory."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from pathlib import Path

from pneumo.dicom_node.config import NodeConfig
from pneumo.dicom_node.spool import Spool, instance_file_name, write_atomically

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
"""C-STORE status: refused, out of resources (the sender may try again later)."""
CANNOT_UNDERSTAND = 0xC000
"""C-STORE status: error, cannot understand (no SOP Instance UID)."""


def make_store_handler(
    spool: Spool, films: queue.Queue[Path], is_done: Callable[[str], bool]
) -> Callable:
    """The ``EVT_C_STORE`` handler: journal, deduplicate, queue. ``is_done(sop_uid)`` says
    whether that instance was already classified (a duplicate send gets no second record)."""

    def on_store(event) -> int:
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        caller = event.assoc.requestor.ae_title
        if not sop_uid:
            log.warning("refused an object without a SOP Instance UID from %s", caller)
            return CANNOT_UNDERSTAND
        path = spool.inbox / instance_file_name(sop_uid)
        if path.exists() or is_done(sop_uid):
            log.info("instance %s from %s received again: already taken, ignored", sop_uid, caller)
            return SUCCESS
        write_atomically(path, event.encoded_dataset(include_meta=True))
        try:
            films.put_nowait(path)
        except queue.Full:
            path.unlink(missing_ok=True)
            log.warning("queue full: asked %s to send instance %s again later", caller, sop_uid)
            return OUT_OF_RESOURCES
        log.info("received instance %s from %s", sop_uid, caller)
        return SUCCESS

    return on_store


def on_abort_received(event) -> None:
    """``EVT_ACSE_RECV``: log an association that ends without a release, because the sender
    aborted (A-ABORT) or its connection dropped (A-P-ABORT: it crashed, the network went).
    pynetdicom hands a C-STORE to ``on_store`` only once its whole data set has arrived, so a
    film cut off mid-transfer never reached the inbox; its sender was not told "stored" and
    sends it again. Logged with the caller, never with anything the film held."""
    kind = type(event.primitive).__name__
    if kind not in ("A_ABORT", "A_P_ABORT"):
        return  # association requests and releases: pynetdicom logs those
    how = "A-ABORT" if kind == "A_ABORT" else "the connection dropped"
    log.warning(
        "association from %s (%s) ended without a release (%s): a film it had not finished "
        "sending was discarded, nothing of it was kept",
        event.assoc.requestor.ae_title,
        event.assoc.requestor.address,
        how,
    )


def start_scp(config: NodeConfig, on_store: Callable):
    """Start listening (in pynetdicom's threads); returns the server, whose ``shutdown()``
    stops it. Any storage SOP class in any transfer syntax is accepted: what is not a chest
    radiograph is answered with "not assessed" after classification, not refused at the door."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    from pneumo.dicom_node.sender import TRANSFER_SYNTAXES

    ae = AE(ae_title=config.ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    if config.allowed_callers:
        ae.require_calling_aet = list(config.allowed_callers)
    ae.maximum_pdu_size = 0  # no limit: large films in fewer PDUs
    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_ACSE_RECV, on_abort_received)]
    server = ae.start_server((config.bind, config.port), block=False, evt_handlers=handlers)
    log.info(
        "DICOM node %s listening on %s:%d%s",
        config.ae_title,
        config.bind,
        server.server_address[1],
        f" (callers: {', '.join(config.allowed_callers)})" if config.allowed_callers else "",
    )
    return server
