"""A submission's way into the patient records, and what the records tell back: classify and
store, the history of a patient, the audit trail. Every query goes through
``storage.repository``; a failing row is logged by error class (never with a patient's name)
and never takes the other rows or the results on screen with it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pneumo.app.classify import (
    ImageResult,
    Submission,
    add_heatmaps,
    classify_images,
    model_version,
)
from pneumo.app.display import display_result
from pneumo.app.intake import InputItem, NothingToClassify, PatientEntry
from pneumo.app.settings import AppSettings
from pneumo.errors import PneumoError
from pneumo.storage import repository as repo
from pneumo.storage.db import describe_db_error

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from pneumo.inference.base import Predictor
    from pneumo.inference.cam import GradCam

log = logging.getLogger(__name__)


def classify_and_store(
    *,
    items: list[InputItem],
    patient: PatientEntry,
    predictor: Predictor,
    session_factory: sessionmaker,
    session_id: str,
    user: str = "",
    cam: GradCam | None = None,
    settings: AppSettings | None = None,
) -> Submission:
    """Classify every good item, store one record each, add heatmaps; bad items keep their own
    error and never stop the others. Raises NothingToClassify for no items."""
    settings = settings or AppSettings()
    if not items:
        raise NothingToClassify()
    start = time.perf_counter()
    version = model_version(predictor.metadata)
    results, pictures = classify_images(items, predictor, settings)
    _store(results, patient, version, session_factory, session_id, user)
    if cam is not None:
        add_heatmaps(results, pictures, cam, predictor.metadata)
    seconds = time.perf_counter() - start
    log.info(
        "classified %d of %d images in %.2f s (session %s)",
        sum(r.prediction is not None for r in results),
        len(results),
        seconds,
        session_id[:8],
    )
    return Submission(patient.name, patient.patient_id, results, seconds, version)


def _store(results, entry: PatientEntry, version, session_factory, session_id, user) -> None:
    """One commit per record, so a failing row never takes the others with it. The patient is
    created with their first record: a submission that stores nothing (refused URLs, unreadable
    files) leaves no patient without records in the history."""
    stored = 0
    patient = owner = None  # owner: the patient as last committed, for the audit row
    with session_factory() as s:
        for res in results:
            p = res.prediction
            if p is None:
                continue
            try:
                if patient is None:
                    patient = repo.get_or_create_patient(
                        s, name=entry.name, patient_code=entry.patient_id
                    )
            except Exception as exc:  # noqa: BLE001 - the results stay on screen
                log.error(
                    "cannot store the patient (session %s): %s",
                    session_id[:8],
                    describe_db_error(exc),
                )
                s.rollback()
                for other in results:
                    if other.prediction is not None and other.record_id is None:
                        other.store_error = "not saved: the database is unavailable"
                return
            try:
                rec = repo.add_record(
                    s,
                    patient=patient,
                    file_name=res.name,
                    sha256=res.sha256,
                    prediction=p.label,
                    probability=p.probability,
                    threshold=p.threshold,
                    uncertain=p.uncertain,
                    ood=p.ood,
                    model_version=version,
                    session_id=session_id,
                    user=user,
                )
                s.commit()
                res.record_id = rec.id
                stored += 1
                owner = patient
            except Exception as exc:  # noqa: BLE001 - one failing row never drops the others
                log.error(
                    "cannot store a record (session %s): %s", session_id[:8], describe_db_error(exc)
                )
                s.rollback()
                res.store_error = "not saved: database error"
                patient = None  # rolled back with the record when it was new: look it up again
        try:
            errors = sum(r.error is not None for r in results)
            repo.add_audit(
                s,
                action="classify",
                session_id=session_id,
                user=user,
                patient=owner,
                detail=f"{stored} stored, {errors} failed",
            )
            s.commit()
        except Exception as exc:  # noqa: BLE001 - one failing row never drops the others
            log.error(
                "cannot write the audit row (session %s): %s",
                session_id[:8],
                describe_db_error(exc),
            )
            s.rollback()


@dataclass
class PatientHistory:
    """One patient and their stored records, newest first, as plain rows for a table."""

    name: str
    patient_id: str
    rows: list[dict]


class HistoryUnavailable(PneumoError):
    """The database could not be read (the message is for the page; details go nowhere)."""


def patient_history(
    *, session_factory: sessionmaker, query: str, session_id: str, user: str = ""
) -> list[PatientHistory]:
    """Patients matching ``query`` (name part or exact ID) with their records; each patient
    shown is written to the audit trail as viewed. Raises HistoryUnavailable when the database
    cannot be read or the viewing cannot be audited."""
    try:
        return _patient_history(session_factory, query, session_id, user)
    except Exception as exc:  # noqa: BLE001 - shown as a message, logged by class only
        log.error(
            "cannot read the history (session %s): %s", session_id[:8], describe_db_error(exc)
        )
        raise HistoryUnavailable(
            "The patient history is unavailable: the database cannot be read right now."
        ) from None


def _patient_history(session_factory, query: str, session_id: str, user: str):
    out = []
    with session_factory() as s:
        for patient in repo.find_patients(s, query=query):
            rows = [
                {
                    "time (UTC)": r.created.strftime("%Y-%m-%d %H:%M:%S") if r.created else "",
                    "file": r.file_name,
                    "result": display_result(r.prediction, r.ood),
                    # records stored before OOD films lost their numbers still hold one
                    "P(pneumonia)": None
                    if r.ood or r.probability is None
                    else round(r.probability, 4),
                    "threshold": round(r.threshold, 4),
                    "uncertain": r.uncertain,
                    "model": r.model_version,
                    "sha256": r.sha256[:16],
                    "user": r.user,
                }
                for r in repo.patient_records(s, patient_id=patient.id)
            ]
            repo.add_audit(
                s,
                action="view_history",
                session_id=session_id,
                user=user,
                patient=patient,
                detail=f"{len(rows)} records",
            )
            out.append(PatientHistory(patient.name, patient.patient_code, rows))
        s.commit()
    return out


def audit_login(*, session_factory: sessionmaker, session_id: str, user: str, ok: bool) -> None:
    """Note a sign-in, or a failed one, in the audit trail. A failure raises: the page does not
    let anyone in whose sign-in cannot be recorded."""
    with session_factory() as s:
        repo.add_audit(
            s, action="login" if ok else "login_failed", session_id=session_id, user=user
        )
        s.commit()


def audit_export(
    *,
    session_factory: sessionmaker,
    results: list[ImageResult],
    session_id: str,
    user: str,
    kind: str,
) -> None:
    """Note in the audit trail that a session's results were exported (CSV or PDF); a failure
    is logged (by class) and does not stop the export the user asked for."""
    try:
        _audit_export(session_factory, results, session_id, user, kind)
    except Exception as exc:  # noqa: BLE001 - the export itself still works
        log.error("cannot audit an export (session %s): %s", session_id[:8], describe_db_error(exc))


def _audit_export(session_factory, results, session_id: str, user: str, kind: str) -> None:
    ids = [r.record_id for r in results if r.record_id is not None]
    with session_factory() as s:
        patient = repo.record_patient(s, record_id=ids[0]) if ids else None
        repo.add_audit(
            s,
            action="export",
            session_id=session_id,
            user=user,
            patient=patient,
            detail=f"{kind}, {len(results)} images",
        )
        s.commit()
