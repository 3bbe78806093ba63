"""Database limits an operator sets (issue 19): pool size, connect and statement timeouts, read
from PNEUMO_DB_* and enforced on a real PostgreSQL, each exceeded limit named in the message."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import text

from pneumo.errors import PneumoError
from pneumo.storage.db import DatabaseSettings, create_db_engine, describe_db_error


def test_settings_come_from_the_environment_and_bad_values_are_named():
    settings = DatabaseSettings.from_env(
        {"PNEUMO_DB_POOL_SIZE": "2", "PNEUMO_DB_STATEMENT_TIMEOUT_S": "0.5"}
    )
    assert (settings.pool_size, settings.statement_timeout_s) == (2, 0.5)
    assert settings.connect_timeout_s == DatabaseSettings.connect_timeout_s
    with pytest.raises(PneumoError, match="PNEUMO_DB_POOL_SIZE must be at least 1"):
        DatabaseSettings.from_env({"PNEUMO_DB_POOL_SIZE": "0"})
    with pytest.raises(PneumoError, match="PNEUMO_DB_CONNECT_TIMEOUT_S must be a number"):
        DatabaseSettings.from_env({"PNEUMO_DB_CONNECT_TIMEOUT_S": "soon"})


def test_a_statement_over_the_timeout_is_cancelled_and_named(postgres_server, monkeypatch):
    from sqlalchemy.exc import OperationalError

    monkeypatch.setenv("PNEUMO_DB_STATEMENT_TIMEOUT_S", "0.3")
    engine = create_db_engine(postgres_server.create_database())
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1  # short ones run
            with pytest.raises(OperationalError) as caught:
                connection.execute(text("SELECT pg_sleep(3)"))
    finally:
        engine.dispose()
    assert "longer than 0.3 s (PNEUMO_DB_STATEMENT_TIMEOUT_S)" in describe_db_error(caught.value)


def test_a_full_pool_makes_the_next_request_wait_then_says_why(postgres_server, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    monkeypatch.setenv("PNEUMO_DB_POOL_SIZE", "1")
    monkeypatch.setenv("PNEUMO_DB_POOL_TIMEOUT_S", "0.5")
    engine = create_db_engine(postgres_server.create_database())
    try:
        held = [engine.connect(), engine.connect()]  # the pool and as many again
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as caught:
            engine.connect()
        assert time.monotonic() - started >= 0.45  # it waited for a free connection first
        for connection in held:
            connection.close()
        with engine.connect() as connection:  # and serves again once one is free
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    message = describe_db_error(caught.value)
    assert "every database connection was busy for 0.5 s" in message
    assert "PNEUMO_DB_POOL_SIZE 1" in message


def test_a_server_that_never_answers_fails_at_the_connect_timeout(postgres_server, monkeypatch):
    """A port that accepts and then says nothing (a hung server, a black-holing proxy)."""
    from sqlalchemy.exc import OperationalError

    silent = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    port = silent.getsockname()[1]
    monkeypatch.setenv("PNEUMO_DB_CONNECT_TIMEOUT_S", "1")
    url = postgres_server.url().rsplit("@", 1)[0] + f"@127.0.0.1:{port}/postgres"
    engine = create_db_engine(url)
    try:
        with pytest.raises(OperationalError) as caught:
            engine.connect()
    finally:
        engine.dispose()
        silent.close()
    assert accepted, "the client never reached the silent server"
    assert "did not answer within 1 s (PNEUMO_DB_CONNECT_TIMEOUT_S)" in describe_db_error(
        caught.value
    )
