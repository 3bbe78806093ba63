"""Where the database lives, how to connect, and bringing its schema up to date with the
Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pneumo.errors import PneumoError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StorageError(PneumoError):
    """The database cannot be opened or migrated."""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/pneumo/pneumo.db`` (``~/.local/share/pneumo/pneumo.db``): outside any
    checkout, so patient records are never committed by accident."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "pneumo" / "pneumo.db"


def database_url(db: str | Path | None = None) -> str:
    """``db`` (a SQLAlchemy URL or a file path), else ``$PNEUMO_DB``, else the default SQLite
    file. A plain path means SQLite; its folder is created."""
    chosen = str(db or os.environ.get("PNEUMO_DB") or default_db_path())
    if "://" in chosen:
        return chosen
    path = Path(chosen).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on and a busy timeout so that several
    app sessions can write at once."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StorageError(f"cannot use database {redact(url)}: {exc}") from None
    return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the packaged Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot migrate database {redact(str(engine.url))}: {exc}") from None
    log.info("database %s is at revision %s", redact(str(engine.url)), revision)


def open_database(db: str | Path | None = None) -> sessionmaker:
    """Resolve, connect and migrate; returns a session factory (``with factory() as s:``)."""
    from sqlalchemy.orm import sessionmaker

    engine = create_db_engine(database_url(db))
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
