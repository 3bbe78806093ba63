"""The patient database: schema from the shipped migrations, records, history, audit; on SQLite
and on a real PostgreSQL server (``db_url`` runs each test on both)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect

from pneumo.storage import repository as repo
from pneumo.storage.db import StorageError, create_db_engine, database_url, migrate, open_database


@pytest.fixture
def factory(db_url):
    return open_database(db_url)


def _record(session, patient, **overrides):
    values = dict(
        patient=patient,
        file_name="chest.jpeg",
        sha256="ab" * 32,
        prediction="PNEUMONIA",
        probability=0.91,
        threshold=0.42,
        model_version="tf_efficientnet_lite0 2025-01-01",
        session_id="s1",
        user="dr-who",
    )
    values.update(overrides)
    return repo.add_record(session, **values)


def test_migrations_create_schema_on_fresh_sqlite_file(tmp_path):
    path = tmp_path / "nested" / "fresh.db"
    open_database(path)
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        version = conn.execute("select version_num from alembic_version").fetchone()[0]
    assert {"patients", "records", "audit", "reviews", "films", "alembic_version"} <= tables
    assert version == "0004"


def test_migrations_match_the_tables_and_are_idempotent(db_url):
    engine = create_db_engine(database_url(db_url))
    migrate(engine)
    migrate(engine)  # a restart must not fail or duplicate anything
    columns = {c["name"] for c in inspect(engine).get_columns("records")}
    assert {
        "patient_id",
        "created",
        "file_name",
        "sha256",
        "prediction",
        "probability",
        "threshold",
        "model_version",
        "session_id",
        "user",
        "uncertain",
        "ood",
    } <= columns
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from pneumo.storage.tables import Base

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"tables and migrations disagree: {diff}"


def test_pneumo_db_env_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_DB", str(tmp_path / "env.db"))
    assert database_url() == f"sqlite:///{tmp_path / 'env.db'}"
    assert database_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"


def test_unusable_database_url_is_a_clear_error():
    with pytest.raises(StorageError, match="cannot use database"):
        open_database("nosuchdialect://x/y")


def test_record_round_trip(factory):
    with factory() as s:
        patient = repo.get_or_create_patient(s, name="  Ada   Lovelace ", patient_code="P-7")
        rec = _record(s, patient, uncertain=True)
        s.commit()
        rec_id = rec.id
    with factory() as s:
        (stored,) = repo.patient_records(s, patient_id=patient.id)
        assert stored.id == rec_id
        assert stored.patient.name == "Ada Lovelace"
        assert stored.patient.patient_code == "P-7"
        assert (stored.prediction, stored.probability, stored.threshold) == (
            "PNEUMONIA",
            0.91,
            0.42,
        )
        assert stored.sha256 == "ab" * 32 and stored.uncertain and not stored.ood
        assert stored.model_version.startswith("tf_efficientnet_lite0")
        assert stored.created is not None and stored.user == "dr-who"


def test_history_is_per_patient_and_newest_first(factory):
    with factory() as s:
        ada = repo.get_or_create_patient(s, name="Ada")
        bob = repo.get_or_create_patient(s, name="Bob", patient_code="42")
        _record(s, ada, file_name="a1.jpeg")
        _record(s, bob, file_name="b1.jpeg")
        _record(s, ada, file_name="a2.jpeg")
        s.commit()
    with factory() as s:
        again = repo.get_or_create_patient(s, name="ada")  # same patient, case-insensitive
        assert again.id == ada.id
        assert [r.file_name for r in repo.patient_records(s, patient_id=ada.id)] == [
            "a2.jpeg",
            "a1.jpeg",
        ]
        assert [p.name for p in repo.find_patients(s, query="B")] == ["Bob"]
        assert [p.name for p in repo.find_patients(s, query="42")] == ["Bob"]
        assert repo.find_patients(s, query="%") == []  # LIKE wildcards are literal
        assert len(repo.session_records(s, session_id="s1")) == 3
        (first, *_) = repo.session_records(s, session_id="s1")
        assert repo.record_patient(s, record_id=first.id).id == ada.id
        assert repo.record_patient(s, record_id=first.id + 1000) is None


def test_same_name_different_ids_are_different_patients(factory):
    with factory() as s:
        a = repo.get_or_create_patient(s, name="Sam Lee", patient_code="1")
        b = repo.get_or_create_patient(s, name="Sam Lee", patient_code="2")
        assert a.id != b.id


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("", "", "required"),
        ("   \t ", "", "required"),
        ("x" * 121, "", "too long"),
        ("Ann", "9" * 65, "Patient ID is too long"),
    ],
)
def test_patient_input_is_checked(name, code, message):
    with pytest.raises(repo.PatientInputError, match=message):
        repo.clean_patient(name, code)


def test_control_characters_are_removed_from_names():
    assert repo.clean_patient("Ann\x00\n Smith\u200b", " 7 ") == ("Ann Smith", "7")


def test_audit_rows(factory):
    with factory() as s:
        p = repo.get_or_create_patient(s, name="Ada")
        repo.add_audit(
            s, action="classify", session_id="s1", user="u1", patient=p, detail="3 images"
        )
        repo.add_audit(s, action="view_history", session_id="s2", patient=p)
        repo.add_audit(s, action="login_failed", session_id="s3")
        s.commit()
    with factory() as s:
        events = repo.audit_events(s, patient_id=p.id)
        assert [(e.action, e.session_id, e.user) for e in events] == [
            ("view_history", "s2", ""),
            ("classify", "s1", "u1"),
        ]
        assert len(repo.audit_events(s)) == 3
        with pytest.raises(ValueError, match="unknown audit action"):
            repo.add_audit(s, action="delete", session_id="s1")


def test_records_need_an_existing_patient(factory):
    from sqlalchemy.exc import IntegrityError

    from pneumo.storage.tables import Record

    with factory() as s:
        s.add(
            Record(
                patient_id=999,
                file_name="x",
                sha256="0" * 64,
                prediction="NORMAL",
                probability=0.1,
                threshold=0.5,
                model_version="m",
                session_id="s",
            )
        )
        with pytest.raises(IntegrityError):
            s.commit()
