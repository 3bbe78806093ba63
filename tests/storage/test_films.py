"""The film store: kept once by content hash, read back unchanged, bounded in size, in a
folder or in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib

import pytest

from pneumo.storage.db import open_database
from pneumo.storage.films import (
    FilmStoreError,
    FilmStoreSettings,
    default_films_dir,
    open_film_store,
)
from pneumo.storage.tables import Film


def _store(kind, db_url, tmp_path, max_mb=1.0):
    factory = open_database(db_url)
    location = "database" if kind == "database" else str(tmp_path / "films")
    return open_film_store(FilmStoreSettings(location, max_mb), factory), factory


@pytest.mark.parametrize("kind", ["folder", "database"])
def test_films_are_kept_once_by_hash_and_bounded(kind, db_url, tmp_path):
    store, factory = _store(kind, db_url, tmp_path, max_mb=1.0)
    film = b"\x89PNG fake film " * 1000
    sha = hashlib.sha256(film).hexdigest()
    assert store.put(film) == sha
    assert store.put(film) == sha  # again: nothing new
    assert store.get(sha) == film
    assert store.get("0" * 64) is None
    big = bytes(range(256)) * 4200  # ~1.03 MiB: past the bound
    assert store.put(big) is None
    assert store.get(hashlib.sha256(big).hexdigest()) is None
    if kind == "folder":
        files = [p for p in (tmp_path / "films").rglob("*") if p.is_file()]
        assert [p.name for p in files] == [sha]
        assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    else:
        with factory() as s:
            assert s.query(Film).count() == 1


def test_a_changed_film_on_disk_is_not_shown(tmp_path):
    store, _ = _store("folder", str(tmp_path / "r.db"), tmp_path)
    sha = store.put(b"original film")
    store.path(sha).write_bytes(b"tampered film")
    assert store.get(sha) is None


def test_settings_and_default_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PNEUMO_FILMS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_films_dir(str(tmp_path / "a" / "r.db")) == tmp_path / "a" / "films"
    assert default_films_dir("postgresql+psycopg://h/db") == tmp_path / "xdg" / "pneumo" / "films"
    monkeypatch.setenv("PNEUMO_FILMS_MAX_MB", "-1")
    with pytest.raises(FilmStoreError, match="PNEUMO_FILMS_MAX_MB must be positive"):
        FilmStoreSettings.from_env(str(tmp_path / "r.db"))
