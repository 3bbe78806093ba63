"""Keyword-only functions over the tables; each takes the session it works in and leaves the
commit to the caller, so one transaction can hold exactly one unit of work."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from pneumo.errors import PneumoError
from pneumo.storage.tables import NAME_MAX, PATIENT_ID_MAX, AuditEvent, Patient, Record

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ACTIONS = (
    "classify",
    "view_history",
    "view_film",
    "export",
    "login",
    "login_failed",
    "review",
    "amend_review",
    "adapt",
)
"""What the audit trail records."""


class PatientInputError(PneumoError):
    """The patient name or ID is missing, too long or unprintable."""


def _storable(text: str) -> str:
    """File names are bytes on Linux: undecodable ones (surrogates) as ``\\xff`` escapes, which
    every database driver can store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _clean(text: str | None) -> str:
    text = unicodedata.normalize("NFC", text or "")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")  # no control chars
    return " ".join(text.split())


def clean_patient(name: str | None, patient_id: str | None = None) -> tuple[str, str]:
    """Trimmed, whitespace-collapsed ``(name, patient_id)``; raises PatientInputError for an
    empty name or either value over its length limit."""
    name, code = _clean(name), _clean(patient_id)
    if not name:
        raise PatientInputError("Patient name is required.")
    if len(name) > NAME_MAX:
        raise PatientInputError(
            f"Patient name is too long ({len(name)} characters, max {NAME_MAX})."
        )
    if len(code) > PATIENT_ID_MAX:
        raise PatientInputError(
            f"Patient ID is too long ({len(code)} characters, max {PATIENT_ID_MAX})."
        )
    return name, code


def name_key(name: str) -> str:
    return _clean(name).casefold()


def get_or_create_patient(session: Session, *, name: str, patient_code: str = "") -> Patient:
    """The patient with this (case-insensitive) name and ID, created when new."""
    name, patient_code = clean_patient(name, patient_code)
    key = name_key(name)
    same = select(Patient).where(Patient.name_key == key, Patient.patient_code == patient_code)
    patient = session.scalars(same).first()
    if patient is None:
        # Another app session (thread or server) may add the same new patient between our
        # look-up and our insert: the insert then does nothing and we take that session's row.
        _insert_unless_present(session, name=name, name_key=key, patient_code=patient_code)
        patient = session.scalars(same).one()
    return patient


def _insert_unless_present(session: Session, **values) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` on the patient identity (one atomic statement that
    leaves the caller's transaction usable); a savepoint elsewhere. Not a savepoint on SQLite:
    the sqlite3 module commits when the savepoint is released."""
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        from importlib import import_module

        insert = import_module(f"sqlalchemy.dialects.{dialect}").insert
        stmt = insert(Patient).values(**values)
        session.execute(stmt.on_conflict_do_nothing(index_elements=["name_key", "patient_code"]))
        return
    try:
        with session.begin_nested():
            session.add(Patient(**values))
    except IntegrityError:
        pass


def add_record(
    session: Session,
    *,
    patient: Patient,
    file_name: str,
    sha256: str,
    prediction: str | None,
    probability: float | None,
    threshold: float,
    model_version: str,
    session_id: str,
    uncertain: bool = False,
    ood: bool = False,
    user: str = "",
    created: datetime | None = None,
    submission_key: str | None = None,
    heatmap_sha256: str | None = None,
) -> Record:
    """Store one classified image (``prediction`` and ``probability`` None: not assessed).
    ``created``: when it was classified (a record delivered late keeps its time)."""
    record = Record(
        patient=patient,
        file_name=_storable(file_name)[:255],
        sha256=sha256,
        prediction=prediction,
        probability=None if probability is None else float(probability),
        threshold=float(threshold),
        uncertain=bool(uncertain),
        ood=bool(ood),
        model_version=model_version[:200],
        session_id=session_id,
        user=user,
        submission_key=submission_key,
        heatmap_sha256=heatmap_sha256,
    )
    if created is not None:
        record.created = created
    session.add(record)
    session.flush()
    return record


def add_audit(
    session: Session,
    *,
    action: str,
    session_id: str,
    user: str = "",
    patient: Patient | None = None,
    detail: str = "",
    created: datetime | None = None,
    submission_key: str | None = None,
) -> AuditEvent:
    """Record who did what to which patient's records; never put names into ``detail``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; one of {ACTIONS}")
    event = AuditEvent(
        action=action,
        session_id=session_id,
        user=user,
        patient_id=patient.id if patient is not None else None,
        detail=detail,
        submission_key=submission_key,
    )
    if created is not None:
        event.created = created
    session.add(event)
    session.flush()
    return event


def record_by_key(session: Session, *, submission_key: str) -> Record | None:
    """The record an outbox delivery stored under this key, if any."""
    return session.scalars(select(Record).where(Record.submission_key == submission_key)).first()


def audit_by_key(session: Session, *, submission_key: str) -> AuditEvent | None:
    """The audit row an outbox delivery stored under this key, if any."""
    stmt = select(AuditEvent).where(AuditEvent.submission_key == submission_key)
    return session.scalars(stmt).first()


def find_patients(session: Session, *, query: str, limit: int = 50) -> list[Patient]:
    """Patients whose name contains ``query`` (case-insensitive) or whose ID equals it."""
    text = _clean(query)
    if not text:
        return []
    escaped = name_key(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = (
        select(Patient)
        .where(
            or_(Patient.name_key.like(f"%{escaped}%", escape="\\"), Patient.patient_code == text)
        )
        .order_by(Patient.name_key, Patient.patient_code)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def patient_records(session: Session, *, patient_id: int) -> list[Record]:
    """All records of one patient, newest first."""
    stmt = (
        select(Record)
        .where(Record.patient_id == patient_id)
        .order_by(Record.created.desc(), Record.id.desc())
    )
    return list(session.scalars(stmt))


def session_records(session: Session, *, session_id: str) -> list[Record]:
    """Records made in one app session, in the order they were stored."""
    stmt = select(Record).where(Record.session_id == session_id).order_by(Record.id)
    return list(session.scalars(stmt))


def record_patient(session: Session, *, record_id: int) -> Patient | None:
    """The patient a stored record belongs to; None when there is no such record."""
    record = session.get(Record, record_id)
    return record.patient if record is not None else None


def audit_events(
    session: Session, *, patient_id: int | None = None, limit: int = 200
) -> list[AuditEvent]:
    """Audit events, newest first, optionally for one patient."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if patient_id is not None:
        stmt = stmt.where(AuditEvent.patient_id == patient_id)
    return list(session.scalars(stmt))
