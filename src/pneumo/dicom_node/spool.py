"""The node's journal on disk: every film is written to the inbox before PACS is told it was
stored, every result to the outbox before anyone tries to send it. A crash, a restart or a
destination that is down loses nothing; whatever is on disk is picked up again at start."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pneumo.files import write_atomic

SUFFIX = ".dcm"
PART_PREFIX = ".part-"
"""Temporary files of writes under way; left by a crash, they are removed at start-up."""


def instance_file_name(sop_instance_uid: str) -> str:
    """A file name for one SOP Instance: the same instance sent twice lands on the same file."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:32] + SUFFIX


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, even after a power cut."""
    # 0600: films carry patient data; ".part-" lets start-up sweep writes cut short
    write_atomic(path, data, durable=True, mode=0o600, prefix=PART_PREFIX)


@dataclass
class SendState:
    """How delivery to the destination is going (``state.json``, read by ``--status``)."""

    destination: str = ""
    delivered: int = 0
    """Results delivered since the outbox was made."""
    failures: int = 0
    """Tries in a row that failed; 0 when the last one worked."""
    last_error: str = ""
    next_try: float = 0.0
    """Unix time of the next try after a failure."""


class Spool:
    """``inbox/`` (films received, not yet classified), ``outbox/`` (results not yet delivered)
    and ``state.json`` under one folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.inbox = self.root / "inbox"
        self.outbox = self.root / "outbox"
        for folder in (self.inbox, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
            # a write cut short: its sender was not told OK
            for stale in folder.glob(PART_PREFIX + "*"):
                stale.unlink(missing_ok=True)

    @staticmethod
    def waiting(folder: Path) -> list[Path]:
        """Files waiting in ``folder``, oldest first."""
        files = [p for p in folder.glob("*" + SUFFIX) if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def read_state(self) -> SendState:
        try:
            return SendState(**json.loads((self.root / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return SendState()

    def write_state(self, state: SendState) -> None:
        write_atomically(self.root / "state.json", json.dumps(asdict(state)).encode())


@dataclass(frozen=True)
class SpoolStatus:
    """What ``pneumo dicom-node --status`` reports."""

    films_waiting: int
    results_waiting: int
    state: SendState

    def lines(self) -> list[str]:
        s = self.state
        out = [
            f"films waiting to be classified: {self.films_waiting}",
            f"results waiting to be sent: {self.results_waiting}"
            + (f" (to {s.destination})" if s.destination else ""),
            f"results delivered: {s.delivered}",
        ]
        if s.failures:
            wait = max(0.0, s.next_try - time.time())
            out.append(
                f"destination failing: {s.failures} tries in a row, last error: {s.last_error}; "
                f"next try in {wait:.0f} s"
            )
        return out


def spool_status(root: Path) -> SpoolStatus:
    """The state of a node's spool folder (running or not)."""
    spool = Spool(root)
    return SpoolStatus(
        len(spool.waiting(spool.inbox)), len(spool.waiting(spool.outbox)), spool.read_state()
    )
