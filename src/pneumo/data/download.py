"""Download the official Kermany archive from Mendeley Data and unpack it into the layout the
rest of pneumo reads: ``DEST/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/``."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlsplit

from pneumo import CLASS_NAMES
from pneumo.data.decode import IMAGE_SUFFIXES
from pneumo.data.discover import SPLITS, find_images
from pneumo.errors import DataError

log = logging.getLogger(__name__)

DATASET_PAGE = "https://data.mendeley.com/datasets/rscbjbr9sj/2"
"""Kermany, Zhang, Goldbaum (2018), Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0."""
MENDELEY_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
"""ChestXRay2017.zip (about 1.2 GB); redirects to the file store. Mendeley publishes no
checksum: the SHA-256 is computed, printed, and can be pinned with ``--sha256``."""
ARCHIVE_NAME = "ChestXRay2017.zip"
CHUNK = 1 << 20
_SKIP_NAMES = ("__MACOSX", ".DS_Store")


@dataclass(frozen=True)
class DownloadResult:
    """What ``download_dataset`` did."""

    data_root: Path
    """Folder holding {train,val,test}/{NORMAL,PNEUMONIA}/: pass it as --data or PNEUMO_DATA."""
    images: int
    """Images in the data root."""
    archive: Path | None
    """The downloaded archive (None when the data was already there or it was removed)."""
    sha256: str | None
    """SHA-256 of the archive (None when the data was already there)."""
    downloaded_bytes: int = 0
    """Bytes fetched by this run (0 when nothing had to be fetched)."""
    resumed_from: int = 0
    """Bytes of an earlier interrupted download that were kept."""


def _offline_hint(dest: Path) -> str:
    return (
        f"download {ARCHIVE_NAME} from {DATASET_PAGE} on a machine that is online, then "
        f"either put it at {dest / ARCHIVE_NAME} and run `pneumo data download --dest {dest}` "
        f"again (it unpacks without the network), or unpack it so that {dest / 'chest_xray'}/"
        "{train,val,test}/{NORMAL,PNEUMONIA}/ exists and point --data or PNEUMO_DATA at it"
    )


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Resolve and connect to the host of ``url`` within ``timeout`` seconds in all, or raise
    DataError. Name resolution runs in a daemon thread because it ignores socket timeouts and can
    hang for much longer on a machine without a network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"not an http(s) URL: {url}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    found: list = []

    def resolve():
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise OSError(f"name lookup of {host} timed out after {timeout:g} s")
    if isinstance(found[0], OSError):
        raise OSError(f"cannot resolve {host} ({found[0]})")
    error: OSError | None = None
    for family, kind, proto, _, address in found[0]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(address)
                return
        except OSError as exc:
            error = exc
    raise OSError(f"cannot connect to {host}:{port} ({error or 'timed out'})")


def _content_total(resp, start: int) -> int | None:
    """Full size of the remote file from Content-Range (206) or Content-Length (200)."""
    if m := re.match(r"bytes (\d+)-\d+/(\d+)", resp.headers.get("content-range", "")):
        if int(m.group(1)) != start:
            raise DataError(f"server resumed at byte {m.group(1)}, not at {start}")
        return int(m.group(2))
    length = resp.headers.get("content-length")
    return int(length) + (start if resp.status_code == 206 else 0) if length else None


@contextmanager
def _progress_bar(enabled: bool, total: int | None, done: int) -> Iterator:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("downloading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task("download", total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def fetch(
    url: str, part: Path, *, connect_timeout: float = 5.0, progress: bool = True
) -> tuple[int, int]:
    """Download ``url`` into ``part``, resuming after the bytes already there (HTTP Range).

    Returns (bytes kept from before, bytes fetched now). An interrupted transfer raises
    DataError and leaves ``part`` in place for the next try.
    """
    import httpx

    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    timeout = httpx.Timeout(60.0, connect=connect_timeout)
    fetched, total = 0, None
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", url, headers=headers) as resp,
        ):
            if resp.status_code == 416 and start:
                size = resp.headers.get("content-range", "").rpartition("/")[2]
                if size.isdigit() and int(size) == start:
                    return start, 0  # the earlier run got every byte but was stopped before rename
                part.unlink()
                raise DataError(f"{part} does not match the remote file; removed it, run again")
            if resp.status_code == 200 and start:
                log.info("server ignored the resume request; downloading from the start")
                start = 0
            elif resp.status_code not in (200, 206):
                raise DataError(f"download failed: HTTP {resp.status_code} from {url}")
            total = _content_total(resp, start)
            if start:
                log.info("resuming download at %.1f MB", start / 1e6)
            with (
                part.open("ab" if start else "wb") as f,
                _progress_bar(progress, total, start) as advance,
            ):
                for chunk in resp.iter_bytes():  # as received: nothing lost if cut off
                    f.write(chunk)
                    fetched += len(chunk)
                    advance(len(chunk))
    except httpx.HTTPError as exc:
        raise DataError(
            f"download interrupted after {start + fetched:,} of {total or '?'} bytes ({exc}); "
            "run the same command again to resume"
        ) from None
    if total is not None and start + fetched != total:
        raise DataError(
            f"download interrupted after {start + fetched:,} of {total:,} bytes; "
            "run the same command again to resume"
        )
    return start, fetched


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _member_parts(name: str, archive: Path, dest: Path) -> tuple[str, ...]:
    """Path parts of an archive member, refusing names that would escape the destination."""
    clean = name.replace("\\", "/")
    path = PurePosixPath(clean)
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", clean):
        raise DataError(
            f"{archive}: refusing archive member {name!r}: it would be written outside {dest}"
        )
    return tuple(p for p in path.parts if p not in ("", "."))


def _target(parts: tuple[str, ...]) -> tuple[str, ...] | None:
    """``(split, CLASS, file...)`` for an image of the data set wherever the archive nests it
    (ChestXRay2017.zip has ``chest_xray/``); None for anything else."""
    if any(p in _SKIP_NAMES for p in parts) or not parts or parts[-1].startswith("._"):
        return None
    if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    for i in range(len(parts) - 2):
        if parts[i].lower() in SPLITS and parts[i + 1].upper() in CLASS_NAMES:
            return (parts[i].lower(), parts[i + 1].upper(), *parts[i + 2 :])
    return None


def _members(archive: Path) -> Iterator[tuple[str, bool, object]]:
    """(name, is_regular_file, opener) for every member of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                yield info.filename, not info.is_dir() and not is_link, lambda i=info: zf.open(i)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for m in tf:
                yield m.name, m.isfile(), lambda m=m: tf.extractfile(m)
    else:
        raise DataError(
            f"{archive} is not a zip or tar archive (an error page instead of the data?); "
            "remove it and run again"
        )


def unpack_archive(archive: Path, dest: Path) -> Path:
    """Unpack the images of a zip or tar into ``dest/chest_xray/{split}/{CLASS}/``.

    Skips macOS metadata (``__MACOSX``, ``._*``) and anything outside split/class folders;
    refuses members that would escape ``dest`` (zip-slip) before writing anything. Unpacks into
    a staging folder renamed at the end, so an interrupted unpack never looks like a data set.
    """
    archive, dest = Path(archive), Path(dest)
    target = dest / "chest_xray"
    staging = dest / ".chest_xray.partial"
    # First pass: check every name before writing anything, so a hostile archive writes nothing.
    wanted = set()
    for name, is_file, _ in _members(archive):
        parts = _member_parts(name, archive, dest)
        if is_file and (mapped := _target(parts)) is not None:
            wanted.add(mapped)
    if not wanted:
        raise DataError(
            f"{archive} has no images in {{train,val,test}}/{{NORMAL,PNEUMONIA}}/ folders"
        )
    if staging.exists():
        shutil.rmtree(staging)
    root = staging.resolve()
    written = 0
    for name, is_file, opener in _members(archive):
        mapped = _target(_member_parts(name, archive, dest)) if is_file else None
        if mapped is None:
            continue
        out = staging.joinpath(*mapped)
        if not out.resolve().is_relative_to(root):
            raise DataError(f"{archive}: refusing archive member {name!r} outside {dest}")
        out.parent.mkdir(parents=True, exist_ok=True)
        src: IO[bytes] = opener()
        with src, out.open("wb") as f:
            shutil.copyfileobj(src, f, CHUNK)
        written += 1
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    log.info("unpacked %d images into %s", written, target)
    return target


def download_dataset(
    dest: Path = Path("data"),
    *,
    url: str = MENDELEY_URL,
    sha256: str | None = None,
    remove_archive: bool = False,
    connect_timeout: float = 5.0,
    progress: bool = True,
) -> DownloadResult:
    """Download the official data set (about 1.2 GB) and unpack it into DEST/chest_xray.

    Fetches ChestXRay2017.zip from Mendeley Data and unpacks its images into
    DEST/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/ (macOS metadata skipped, members that
    would escape DEST refused).
    Resumable: an interrupted download stays in DEST/ChestXRay2017.zip.part and the next run
    continues where it stopped. The archive's SHA-256 is printed; pass it as --sha256 to pin it
    (Mendeley publishes none). An archive already at DEST/ChestXRay2017.zip is unpacked without
    the network. Offline, it fails within seconds and says where to put the data instead.
    Data: Kermany, Zhang, Goldbaum (2018), doi:10.17632/rscbjbr9sj.2, CC BY 4.0.
    """
    dest = Path(dest)
    target = dest / "chest_xray"
    if target.is_dir():
        try:
            n = len(find_images(target))
        except DataError:
            raise DataError(
                f"{target} exists but is not a complete data set; remove it and run again"
            ) from None
        log.info("%s already holds %d images; nothing to download", target, n)
        return DownloadResult(target, n, None, None)
    archive = dest / ARCHIVE_NAME
    part = dest / (ARCHIVE_NAME + ".part")
    kept = fetched = 0
    if not archive.is_file():
        try:
            check_reachable(url, connect_timeout)
        except OSError as exc:
            raise DataError(f"no network: {exc}. Instead, {_offline_hint(dest)}") from None
        dest.mkdir(parents=True, exist_ok=True)
        kept, fetched = fetch(url, part, connect_timeout=connect_timeout, progress=progress)
        part.rename(archive)
    log.info("computing the SHA-256 of %s", archive)
    digest = file_sha256(archive)
    if sha256 and digest != sha256.strip().lower():
        archive.unlink()
        raise DataError(
            f"checksum mismatch for {archive}: expected {sha256}, got {digest}; "
            "the file was removed, run again to download it anew"
        )
    unpack_archive(archive, dest)
    if remove_archive:
        archive.unlink()
    images = len(find_images(target))
    return DownloadResult(
        target, images, None if remove_archive else archive, digest, fetched, kept
    )
