"""The app's outbox: every submission is journaled on local disk before the page shows it, and
delivered to the database from there, so results made while the database is down are saved
when it returns instead of being lost.

The journal is JSON lines, append-only: a ``submit`` line holds a submission (patient name
included: the file is 0600 in a 0700 folder), an ``ack`` line says it was delivered and which
record ids it got. A submission without an ``ack`` is pending. Delivery is idempotent on the
database side (unique submission keys), so a crash between storing and acknowledging stores
nothing twice on the next try. Lines are fsynced; a torn last line (a crash mid-write) is
skipped. One process or several may share a folder: appends hold an ``flock``."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from pneumo.app import metrics
from pneumo.errors import PneumoError

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
COMPACT_BYTES = 1 << 20
"""A journal with nothing pending is emptied once it grows past this size."""


class OutboxError(PneumoError):
    """The outbox folder cannot be used (the page refuses to classify without it)."""


def default_outbox_dir() -> Path:
    """``$PNEUMO_OUTBOX``, else ``outbox/`` beside the default SQLite file
    (``$XDG_DATA_HOME/pneumo/outbox``)."""
    from pneumo.storage.db import default_db_path

    chosen = os.environ.get("PNEUMO_OUTBOX")
    return Path(chosen).expanduser() if chosen else default_db_path().parent / "outbox"


class Outbox:
    """The journal in ``folder``; thread-safe, and safe to share between processes."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = self.folder / JOURNAL
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)  # patient names: readable by the app's user only
        except OSError as exc:
            raise OutboxError(
                f"cannot use the outbox folder {self.folder}: {exc.strerror}"
            ) from None
        self._lock = threading.Lock()

    def add(self, key: str, submission: dict) -> None:
        """Journal a submission (durably: fsynced before this returns)."""
        self._append({"op": "submit", "key": key, "submission": submission})

    def acknowledge(self, key: str, outcome: dict) -> None:
        """Mark a submission delivered; ``outcome`` (record ids, failures) is kept for the page."""
        self._append({"op": "ack", "key": key, "outcome": outcome})

    def pending(self) -> list[tuple[str, dict]]:
        """``(key, submission)`` not yet delivered, oldest first."""
        submitted, acked = self._read()
        return [(k, sub) for k, sub in submitted.items() if k not in acked]

    def outcome(self, key: str) -> dict | None:
        """What the delivery of ``key`` stored; None while it is pending."""
        return self._read()[1].get(key)

    def pending_results(self) -> int:
        """Images waiting to be saved (each pending submission counts its classified images)."""
        return sum(len(sub["results"]) for _, sub in self.pending())

    def _append(self, line: dict) -> None:
        data = json.dumps(line, ensure_ascii=False).encode() + b"\n"
        with self._lock, open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0, os.SEEK_END)
            if f.tell():
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn line from a crash: start on a fresh one
                    data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> tuple[dict[str, dict], dict[str, dict]]:
        with self._lock, open(self.path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return self._parse(f.read())

    def _parse(self, raw: bytes) -> tuple[dict[str, dict], dict[str, dict]]:
        submitted: dict[str, dict] = {}
        acked: dict[str, dict] = {}
        for number, text in enumerate(raw.splitlines(), 1):
            try:
                line = json.loads(text)
                if line["op"] == "submit":
                    submitted[line["key"]] = line["submission"]
                else:
                    acked[line["key"]] = line["outcome"]
            except (ValueError, KeyError, TypeError):
                if text.strip():
                    log.warning("outbox %s: line %d is unreadable, skipped", self.path, number)
        return submitted, acked

    def compact(self) -> bool:
        """Empty the journal when it is large and nothing is pending; returns whether it did."""
        with self._lock, open(self.path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if os.fstat(f.fileno()).st_size < COMPACT_BYTES:
                return False
            submitted, acked = self._parse(f.read())
            if set(submitted) - set(acked):
                return False
            f.truncate(0)
            os.fsync(f.fileno())
        return True


class Courier:
    """A daemon thread that delivers the outbox with back-off (2 s doubling to 60 s while the
    database stays down); ``nudge`` wakes it at once, as a new submission does."""

    def __init__(self, deliver: Callable[[], int], first_s: float = 2.0, most_s: float = 60.0):
        self._deliver = deliver  # delivers what it can, returns how many remain pending
        self._first_s, self._most_s = first_s, most_s
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pneumo-outbox", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        wait = self._first_s
        while True:
            try:
                left = self._deliver()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                log.error("outbox delivery failed: %s", type(exc).__name__)
                left = 1
            if left:
                metrics.count_database_unavailable()
                self._wake.wait(wait)
                wait = min(wait * 2, self._most_s)
            else:
                self._wake.wait()
                wait = self._first_s
            self._wake.clear()
