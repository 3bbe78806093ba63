"""Settings of the DICOM node: who it is on the network, who may send to it, where results go."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

AE_TITLE_MAX = 16
"""DICOM limits an application entity title to 16 characters (PS3.5, AE value representation)."""


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` trimmed; ValueError naming the problem for one DICOM would refuse."""
    text = title.strip()
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text) > AE_TITLE_MAX:
        raise ValueError(f"{what} {text!r} is longer than {AE_TITLE_MAX} characters")
    if not text.isascii() or "\\" in text or not text.isprintable():
        raise ValueError(f"{what} {text!r} must be printable ASCII without a backslash")
    return text


def check_port(port: int, what: str = "port") -> int:
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {port} is not between 1 and 65535")
    return int(port)


@dataclass(frozen=True)
class Destination:
    """The DICOM node results are sent to (the PACS): ``AE@host:port``."""

    ae_title: str
    """Called AE title of the PACS."""
    host: str
    """Host name or address of the PACS."""
    port: int
    """DICOM port of the PACS."""

    def __post_init__(self):
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "destination AE title"))
        check_port(self.port, "destination port")
        if not self.host.strip():
            raise ValueError("destination host is empty")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@host:port`` (e.g. ``ORTHANC@pacs.example.org:4242``)."""
        ae, at, rest = text.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and port.isdigit()):
            raise ValueError(f"destination {text!r} is not of the form AE@host:port")
        return cls(ae, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def default_spool_dir() -> Path:
    """``$XDG_DATA_HOME/pneumo/dicom-node``: films waiting and results not yet delivered live
    there, outside any checkout."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "pneumo" / "dicom-node"


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``pneumo dicom-node`` needs; checked when made."""

    ae_title: str = "PNEUMO"
    """The node's own AE title (the one PACS calls)."""
    port: int = 11112
    """The DICOM port the node listens on."""
    bind: str = "127.0.0.1"
    """The address to listen on; loopback by default, ``0.0.0.0`` for the hospital network."""
    allowed_callers: tuple[str, ...] = ()
    """Calling AE titles accepted; empty accepts any caller."""
    destination: Destination | None = None
    """Where results are sent; None keeps them in the outbox until one is configured."""
    spool_dir: Path = field(default_factory=default_spool_dir)
    """Inbox of received films and outbox of results not yet delivered (survive restarts)."""
    db: str | None = None
    """Records database (SQLite file or SQLAlchemy URL); default as for the app."""
    model: str | None = None
    """Model folder; default $PNEUMO_MODEL or the bundled model."""
    backend: str = "onnx"
    """Inference backend (as for ``pneumo predict``)."""
    heatmaps: bool = True
    """Send a heatmap overlay (the served graph's class activation map) with each diagnosed film."""
    queue_size: int = 1000
    """Films received but not yet classified, at most. They wait on disk (the inbox) and only
    their paths in memory, so a burst costs disk, not memory; a sender beyond this is told to
    retry later (C-STORE status A700, out of resources) instead of filling the disk. Orthanc,
    like most PACS, does not resend a refused instance by itself: size it for the largest
    burst expected (a burst of 200 films measured: benchmarks/dicom_node.py)."""
    retry_first_s: float = 5.0
    """First wait before resending to a destination that failed; doubles after each failure."""
    retry_max_s: float = 300.0
    """Longest wait between two tries."""

    def __post_init__(self):
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        check_port(self.port)
        callers = tuple(check_ae_title(t, "allowed calling AE title") for t in self.allowed_callers)
        object.__setattr__(self, "allowed_callers", callers)
        object.__setattr__(self, "spool_dir", Path(self.spool_dir))
        if self.queue_size < 1:
            raise ValueError(f"queue size must be at least 1, not {self.queue_size}")
        if not 0 < self.retry_first_s <= self.retry_max_s:
            raise ValueError("retry waits must satisfy 0 < first <= max")
