"""Writing a file so that readers see the old one or the new one, never half of it: write a
temporary file beside the target (same file system), then ``os.replace`` it over the target;
on any error the temporary file is removed and the target is left as it was."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NEW_FILE_MODE = 0o666
"""What ``open(path, "w")`` creates a file with, before the umask: an atomic write leaves the
same permissions a plain one would (mkstemp's 0600 hid a shipped model.onnx from other users)."""


def temporary_beside(
    path: str | Path, *, mode: int = NEW_FILE_MODE, prefix: str | None = None
) -> Path:
    """A new, empty temporary file in ``path``'s folder (created when missing), for a writer
    that outlives one ``with`` block (a row writer open for a whole run): finish it with
    ``os.replace(tmp, path)``, or remove it. ``atomic_path`` does both for a block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}." if prefix is None else prefix
    while True:
        tmp = path.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


@contextmanager
def atomic_path(
    path: str | Path, *, mode: int = NEW_FILE_MODE, prefix: str | None = None
) -> Iterator[Path]:
    """A new, empty temporary file beside ``path`` for a writer that wants a file name (torch,
    safetensors, ONNX, csv); when the block ends without error it replaces ``path``.

    ``mode`` is the new file's permission bits (before the umask; 0o600 for patient data);
    ``prefix`` starts the temporary name (default ``.NAME.``), for folders that sweep up writes
    cut short by a crash. The parent folder is created when missing."""
    tmp = temporary_beside(path, mode=mode, prefix=prefix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(
    path: str | Path,
    data: bytes | str,
    *,
    durable: bool = False,
    mode: int = NEW_FILE_MODE,
    prefix: str | None = None,
) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file beside it; with
    ``durable`` the bytes reach the disk before the rename (fsync), so that after a power cut
    ``path`` is absent or complete, for writes a sender is told succeeded. Returns ``path``."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, mode=mode, prefix=prefix) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    return path
