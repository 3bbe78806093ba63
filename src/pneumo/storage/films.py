"""The film store: each classified film's bytes kept once, named by their SHA-256 (the hash
every record already carries), so a past result can be shown again at full resolution and
reviewed films can adapt the model. A folder (default: ``films/`` beside the SQLite file, or
in the app's data folder for a server database) or the database itself; bounded in size."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pneumo.errors import PneumoError
from pneumo.files import write_atomic

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)

IN_DATABASE = "database"
"""``PNEUMO_FILMS`` value that keeps films in the database's ``films`` table."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FilmStoreError(PneumoError):
    """The film store cannot be used as configured."""


@dataclass(frozen=True)
class FilmStoreSettings:
    """Where films are kept and how much room they may take."""

    location: str
    """A folder, or ``database`` [PNEUMO_FILMS]."""
    max_mb: float = 20_480.0
    """Most the stored films may take, in MiB [PNEUMO_FILMS_MAX_MB]; a film that would pass it
    is not kept (its result stays, without the film to show again)."""

    def __post_init__(self):
        if not self.location:
            raise ValueError("the film store needs a folder or 'database'")
        if self.max_mb <= 0:
            raise ValueError(f"PNEUMO_FILMS_MAX_MB must be positive, got {self.max_mb:g}")

    @classmethod
    def from_env(cls, db: str | None = None, env: Mapping[str, str] | None = None):
        """From ``PNEUMO_FILMS`` / ``PNEUMO_FILMS_MAX_MB``; the default folder follows the
        database (``db`` as given to the app)."""
        from pneumo.settings_env import EnvReader

        read = EnvReader(env)
        try:
            return cls(
                location=read.text("PNEUMO_FILMS") or str(default_films_dir(db)),
                max_mb=read.number("PNEUMO_FILMS_MAX_MB", float, cls.max_mb),
            )
        except ValueError as exc:
            raise FilmStoreError(f"bad film store setting: {exc}") from None


def default_films_dir(db: str | None = None) -> Path:
    """``films/`` beside a SQLite database file; for a server database (or none given) beside
    the default SQLite file (``$XDG_DATA_HOME/pneumo/films``): outside any checkout."""
    from pneumo.storage.db import database_url, default_db_path

    url = database_url(db)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :]).parent / "films"
    return default_db_path().parent / "films"


class FilmStore(Protocol):
    def put(self, data: bytes) -> str | None:
        """Keep ``data``; returns its SHA-256, or None when it was not kept (full, failing)."""

    def get(self, sha256: str) -> bytes | None:
        """The film with this hash; None when it was never kept."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FolderFilmStore:
    """Films as ``<folder>/<first two hex>/<sha256>``, 0600 in 0700 folders (patient data);
    written to a temporary name and renamed, so a reader never sees half a film. The size
    in use is counted once per process and kept up to date by its own writes."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder).expanduser()
        self.max_bytes = max_bytes
        self._used: int | None = None
        self._lock = threading.Lock()
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise FilmStoreError(
                f"cannot use the film folder {self.folder}: {exc.strerror}"
            ) from None

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.folder / sha256[:2] / sha256

    def _size_in_use(self) -> int:
        if self._used is None:
            self._used = sum(p.stat().st_size for p in self.folder.glob("??/*") if p.is_file())
        return self._used

    def put(self, data: bytes) -> str | None:
        sha = _sha(data)
        path = self.path(sha)
        with self._lock:
            if path.exists():
                return sha
            if self._size_in_use() + len(data) > self.max_bytes:
                log.warning(
                    "film store %s is full (PNEUMO_FILMS_MAX_MB): film not kept", self.folder
                )
                return None
            try:
                path.parent.mkdir(mode=0o700, exist_ok=True)
                write_atomic(path, data, durable=True, mode=0o600, prefix=f".{sha}.")
            except OSError as exc:
                log.error("cannot keep a film in %s: %s", self.folder, exc.strerror)
                return None
            self._used = self._size_in_use() + len(data)
        return sha

    def get(self, sha256: str) -> bytes | None:
        try:
            data = self.path(sha256).read_bytes()
        except (OSError, ValueError):
            return None
        if _sha(data) != sha256:
            log.error("film %s in %s does not match its hash: not shown", sha256[:12], self.folder)
            return None
        return data


class DatabaseFilmStore:
    """Films in the database's ``films`` table (one row per hash); the size in use is the sum
    of the table's sizes, asked for on every write."""

    def __init__(self, session_factory: sessionmaker, max_bytes: int):
        self.session_factory = session_factory
        self.max_bytes = max_bytes

    def put(self, data: bytes) -> str | None:
        from sqlalchemy import func, select
        from sqlalchemy.exc import IntegrityError

        from pneumo.storage.db import describe_db_error
        from pneumo.storage.tables import Film

        sha = _sha(data)
        try:
            with self.session_factory() as s:
                if s.get(Film, sha) is not None:
                    return sha
                used = s.scalar(select(func.coalesce(func.sum(Film.size), 0))) or 0
                if used + len(data) > self.max_bytes:
                    log.warning("film store (database) is full (PNEUMO_FILMS_MAX_MB): not kept")
                    return None
                s.add(Film(sha256=sha, size=len(data), content=data))
                s.commit()
        except IntegrityError:  # another session stored the same film meanwhile
            return sha
        except Exception as exc:  # noqa: BLE001 - the result stays; only the film is not kept
            log.error("cannot keep a film in the database: %s", describe_db_error(exc))
            return None
        return sha

    def get(self, sha256: str) -> bytes | None:
        from pneumo.storage.tables import Film

        with self.session_factory() as s:
            film = s.get(Film, sha256)
            return None if film is None else bytes(film.content)


def open_film_store(settings: FilmStoreSettings, session_factory: sessionmaker) -> FilmStore:
    """The store ``settings`` describe (``session_factory``: the records database)."""
    max_bytes = int(settings.max_mb * 1024 * 1024)
    if settings.location == IN_DATABASE:
        return DatabaseFilmStore(session_factory, max_bytes)
    return FolderFilmStore(settings.location, max_bytes)


def film_suffix(data: bytes) -> str:
    """The file name ending a film's content calls for (``.dcm``, ``.png``, ``.jpeg``)."""
    import io

    from PIL import Image

    from pneumo.data.decode import is_dicom

    if is_dicom(data):
        return ".dcm"
    try:
        with Image.open(io.BytesIO(data)) as img:
            return ".png" if img.format == "PNG" else ".jpeg"
    except Exception:  # noqa: BLE001 - the decoder says what is wrong when it is read
        return ".jpeg"
