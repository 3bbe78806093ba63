"""Where the database lives, how to connect, and bringing its schema up to date with the
Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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


def describe_db_error(exc: BaseException) -> str:
    """A one-line description of a database error that is safe to log: the error classes only,
    and which setting was exceeded when it is a limit (``describe_limit_error``). The message
    itself is not safe: it can quote the SQL parameters or, on PostgreSQL, the values of a
    failing row (``DETAIL: Key (name)=(...)``), patient names included."""
    orig = getattr(exc, "orig", None)
    kind = type(exc).__name__
    kind = f"{kind} ({type(orig).__name__})" if orig is not None else kind
    limit = describe_limit_error(exc)
    return f"{kind}: {limit}" if limit else kind


class HideDatabaseDetails(logging.Filter):
    """Drops the text and traceback of database errors from log records (they can hold patient
    names); the record keeps its own message and names the error class."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_database_error(exc):
            record.msg = f"{record.getMessage()} [{describe_db_error(exc)}; details hidden]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _is_database_error(exc: BaseException) -> bool:
    return any(
        cls.__module__.startswith(("sqlalchemy", "sqlite3", "psycopg", "pymysql", "alembic"))
        for cls in type(exc).__mro__
    )


@dataclass(frozen=True)
class DatabaseSettings:
    """Connection limits, from ``PNEUMO_DB_*`` variables. They apply to server databases
    (PostgreSQL and other pooled ones); SQLite has its own busy timeout."""

    pool_size: int = 5
    """Connections kept open per process (``PNEUMO_DB_POOL_SIZE``); as many again may open
    briefly under load."""
    pool_timeout_s: float = 30.0
    """How long a request waits for a free connection (``PNEUMO_DB_POOL_TIMEOUT_S``)."""
    connect_timeout_s: int = 10
    """How long opening a connection may take (``PNEUMO_DB_CONNECT_TIMEOUT_S``, whole seconds)."""
    statement_timeout_s: float = 30.0
    """Longest a single statement may run on PostgreSQL (``PNEUMO_DB_STATEMENT_TIMEOUT_S``;
    0 for no limit)."""

    @classmethod
    def from_env(cls, env=None) -> DatabaseSettings:
        from pneumo.settings_env import EnvReader

        read = EnvReader(env)
        settings = cls(
            pool_size=read.number("PNEUMO_DB_POOL_SIZE", int, cls.pool_size),
            pool_timeout_s=read.number("PNEUMO_DB_POOL_TIMEOUT_S", float, cls.pool_timeout_s),
            connect_timeout_s=read.number(
                "PNEUMO_DB_CONNECT_TIMEOUT_S", int, cls.connect_timeout_s
            ),
            statement_timeout_s=read.number(
                "PNEUMO_DB_STATEMENT_TIMEOUT_S", float, cls.statement_timeout_s
            ),
        )
        for name, value, least in (
            ("PNEUMO_DB_POOL_SIZE", settings.pool_size, 1),
            ("PNEUMO_DB_POOL_TIMEOUT_S", settings.pool_timeout_s, 0.1),
            ("PNEUMO_DB_CONNECT_TIMEOUT_S", settings.connect_timeout_s, 1),
            ("PNEUMO_DB_STATEMENT_TIMEOUT_S", settings.statement_timeout_s, 0),
        ):
            if value < least:
                raise PneumoError(f"{name} must be at least {least:g}, got {value:g}")
        return settings


def describe_limit_error(exc: BaseException) -> str | None:
    """What a database error means when it is one of ``DatabaseSettings``' limits, in words
    that name the setting; None for any other error."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    try:
        settings = DatabaseSettings.from_env()
    except PneumoError:  # reported where the engine is made; here only the words matter
        settings = DatabaseSettings()
    if isinstance(exc, PoolTimeout):
        return (
            f"every database connection was busy for {settings.pool_timeout_s:g} s "
            f"(PNEUMO_DB_POOL_SIZE {settings.pool_size}, PNEUMO_DB_POOL_TIMEOUT_S)"
        )
    orig = getattr(exc, "orig", exc)
    if type(orig).__name__ == "QueryCanceled":
        return (
            f"a database statement ran longer than {settings.statement_timeout_s:g} s "
            "(PNEUMO_DB_STATEMENT_TIMEOUT_S)"
        )
    if "timeout expired" in str(orig).lower():
        return (
            f"the database did not answer within {settings.connect_timeout_s} s "
            "(PNEUMO_DB_CONNECT_TIMEOUT_S)"
        )
    return None


REDACTED_LOGGERS = ("pneumo", "pneumo.app.records", "pneumo.storage.db", "sqlalchemy.engine")
"""Loggers that get ``HideDatabaseDetails`` (filters act on records made by their own logger)."""


def install_log_redaction() -> None:
    """Add ``HideDatabaseDetails`` to the loggers that report database work (idempotent)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideDatabaseDetails) for f in logger.filters):
            logger.addFilter(HideDatabaseDetails())


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on, write-ahead logging and a busy timeout
    so that several app sessions can write at once. SQL parameters (patient names) never appear in error
    messages or logs (``hide_parameters``)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    install_log_redaction()
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")
                # WAL: a process killed mid-write (kill -9) loses nothing committed and leaves
                # a database that opens clean; readers never block the writer
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                except Exception:  # noqa: BLE001 - read-only or in-memory: keep the default
                    log.debug("SQLite WAL mode unavailable; using the default journal")
                cursor.close()

        else:
            engine = _server_engine(url, DatabaseSettings.from_env())
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StorageError(f"cannot use database {redact(url)}: {exc}") from None
    return engine


def _server_engine(url: str, settings: DatabaseSettings) -> Engine:
    """A pooled engine with the connection limits of ``settings``; on PostgreSQL the connect and
    statement timeouts are sent to the server with every new connection."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    connect_args = {}
    if make_url(url).get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = settings.connect_timeout_s
        milliseconds = round(settings.statement_timeout_s * 1000)
        connect_args["options"] = f"-c statement_timeout={milliseconds}"
    return create_engine(
        url,
        pool_pre_ping=True,
        hide_parameters=True,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        pool_timeout=settings.pool_timeout_s,
        connect_args=connect_args,
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the packaged Alembic migrations up to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import SQLAlchemyError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            _hold_migration_lock(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot migrate database {redact(str(engine.url))}: {describe_db_error(exc)}"
        ) from None
    log.info("database %s is at revision %s", redact(str(engine.url)), revision)


MIGRATION_LOCK_KEY = 0x706E65756D6F
"""PostgreSQL advisory lock taken while migrating ("pneumo" in ASCII)."""


def _hold_migration_lock(connection) -> None:
    """Several app servers starting together on a fresh database would each create the tables
    and all but one fail: one migrates while the others wait (up to the busy timeout on SQLite),
    then find the schema current. Held until the migration transaction ends."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before reading the version


def head_revision() -> str:
    """The newest migration shipped with this package."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def migrate_database(db: str | Path | None = None) -> str:
    """Bring the records database (``--db`` URL or SQLite file; default $PNEUMO_DB or
    ~/.local/share/pneumo/pneumo.db) up to the schema of this version of pneumo. Safe to run
    again and from several machines at once; returns the revision it is at."""
    engine = create_db_engine(database_url(db))
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return head_revision()


def check_database(db: str | Path | None = None) -> str:
    """Check that the records database answers and has the current schema: the app's readiness
    check (exit status 0, or 2 with the reason). Returns the revision; StorageError otherwise."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import SQLAlchemyError

    url = database_url(db)
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot reach database {redact(url)}: {describe_db_error(exc)}"
        ) from None
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        raise StorageError(
            f"database {redact(url)} is at revision {current or 'none (empty)'}, not {head}: "
            f"run `pneumo db migrate --db {redact(url)}`"
        )
    return current


def open_database(db: str | Path | None = None) -> sessionmaker:
    """Resolve, connect and migrate; returns a session factory (``with factory() as s:``)."""
    from sqlalchemy.orm import sessionmaker

    engine = create_db_engine(database_url(db))
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
