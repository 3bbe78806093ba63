"""A submission's way into the patient records, and what the records tell back: classify and
store, the history of a patient, the audit trail. Every query goes through
``storage.repository``; a failing row is logged by error class (never with a patient's name)
and never takes the other rows or the results on screen with it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pneumo.app.classify import (
    ImageResult,
    Submission,
    add_heatmaps,
    classify_images,
    model_version,
)
from pneumo.app.intake import InputItem, NothingToClassify, PatientEntry
from pneumo.app.settings import AppSettings
from pneumo.app.studies import Study, study_of, study_row
from pneumo.errors import PneumoError
from pneumo.storage import repository as repo
from pneumo.storage.db import describe_db_error
from pneumo.storage.reviews import reviews_of

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from pneumo.app.outbox import Outbox
    from pneumo.inference.cam import GradCam
    from pneumo.inference.predictor import Predictor
    from pneumo.storage.films import FilmStore

log = logging.getLogger(__name__)


UNAVAILABLE = "not saved: the database is unavailable"
PENDING = (
    "not saved yet: the database is unavailable; kept on this server and saved when it is back"
)
ROW_FAILED = "not saved: database error"

_delivering = threading.Lock()  # one delivery at a time per process (page runs and the courier)


class DatabaseUnavailable(PneumoError):
    """The database cannot be reached or written now; the submission stays pending."""


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
    outbox: Outbox | None = None,
    films: FilmStore | None = None,
) -> Submission:
    """Classify every good item, store one record each, add heatmaps; bad items keep their own
    error and never stop the others. With an ``outbox`` the submission is journaled before
    anything else and, when the database is down, stays pending there (the page's way);
    without one a failure to store is final. With ``films`` each classified film and its
    heatmap are kept by content hash, so the history can show them again. Raises
    NothingToClassify for no items."""
    settings = settings or AppSettings()
    if not items:
        raise NothingToClassify()
    start = time.perf_counter()
    version = model_version(predictor.metadata)
    results, pictures = classify_images(items, predictor, settings)
    if cam is not None:
        add_heatmaps(results, pictures, cam, predictor.metadata)
    heat_keys = keep_films(films, items, results) if films is not None else {}
    key = uuid.uuid4().hex
    entry = _journal_entry(results, patient, version, session_id, user, heat_keys)
    if outbox is not None:
        outbox.add(key, entry)
        deliver_pending(outbox=outbox, session_factory=session_factory)
        apply_outcome(results, outbox.outcome(key))
    else:
        try:
            apply_outcome(results, deliver(session_factory, key, entry))
        except DatabaseUnavailable:
            for r in results:
                if r.prediction is not None:
                    r.store_error = UNAVAILABLE
    seconds = time.perf_counter() - start
    log.info(
        "classified %d of %d images in %.2f s (session %s)",
        sum(r.prediction is not None for r in results),
        len(results),
        seconds,
        session_id[:8],
    )
    return Submission(patient.name, patient.patient_id, results, seconds, version, key)


def keep_films(films: FilmStore, items: list[InputItem], results: list[ImageResult]) -> dict:
    """Put each classified film (its bytes as uploaded: the hash its record carries) and its
    heatmap into the film store; returns ``{result index: heatmap hash}``. A film that cannot
    be kept leaves its result as it is."""
    from pneumo.app.film_view import heat_png

    heat_keys = {}
    for i, (item, r) in enumerate(zip(items, results, strict=True)):
        if r.prediction is None:
            continue
        films.put(item.data)
        if r.heat is not None:
            heat_keys[i] = films.put(heat_png(r.heat))
    return heat_keys


def _journal_entry(results, entry: PatientEntry, version, session_id, user, heat_keys) -> dict:
    """What the database will be given, as JSON: every classified image, by its index."""
    return {
        "patient": {"name": entry.name, "patient_id": entry.patient_id},
        "created": datetime.now(UTC).isoformat(),
        "model_version": version,
        "session_id": session_id,
        "user": user,
        "errors": sum(r.error is not None for r in results),
        "results": [
            {
                "index": i,
                "file_name": r.name,
                "sha256": r.sha256,
                "prediction": r.prediction.label,
                "probability": None
                if r.prediction.probability is None
                else float(r.prediction.probability),
                "threshold": float(r.prediction.threshold),
                "uncertain": bool(r.prediction.uncertain),
                "ood": bool(r.prediction.ood),
                "heatmap_sha256": heat_keys.get(i),
            }
            for i, r in enumerate(results)
            if r.prediction is not None
        ],
    }


def apply_outcome(results: list[ImageResult], outcome: dict | None) -> None:
    """Record ids (or why not) on the results shown; ``None``: still pending in the outbox."""
    for i, r in enumerate(results):
        if r.prediction is None or r.record_id is not None:
            continue
        if outcome is None:
            r.store_error = PENDING
        elif str(i) in outcome["records"]:
            r.record_id, r.store_error = outcome["records"][str(i)], None
        else:
            r.store_error = ROW_FAILED


def deliver_pending(*, outbox: Outbox, session_factory: sessionmaker) -> int:
    """Deliver the outbox's pending submissions, oldest first, until the database fails;
    returns how many are still pending."""
    with _delivering:
        for key, entry in outbox.pending():
            try:
                outcome = deliver(session_factory, key, entry)
            except DatabaseUnavailable:
                break
            outbox.acknowledge(key, outcome)
        left = len(outbox.pending())
        if left:
            log.warning("database unavailable: %d submission(s) wait in the outbox", left)
        else:
            outbox.compact()
        return left


def _unavailable(exc: BaseException) -> bool:
    """A failure of the database as a whole (down, unreachable, read-only, locked), not of one
    row: worth retrying later."""
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return isinstance(
        exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
    ) or bool(getattr(exc, "connection_invalidated", False))


def deliver(session_factory: sessionmaker, key: str, entry: dict) -> dict:
    """Store one journaled submission: its records, then its audit row. Every row carries a
    unique key and is looked up first, so a second delivery of the same submission (after a
    crash before the acknowledgement, or by another process) stores nothing twice. One commit
    per record: a failing row never takes the others with it. The patient is created with their
    first record. Returns ``{"records": {index: id}, "failed": [index]}``; raises
    DatabaseUnavailable when the database cannot be used now."""
    try:
        with session_factory() as s:
            return _deliver(s, key, entry)
    except Exception as exc:
        if not _unavailable(exc):
            raise
        log.error("cannot store a submission now: %s", describe_db_error(exc))
        raise DatabaseUnavailable(UNAVAILABLE) from None


def _deliver(s, key: str, entry: dict) -> dict:
    created = datetime.fromisoformat(entry["created"])
    session_id, user = entry["session_id"], entry["user"]
    stored: dict[str, int] = {}
    failed: list[int] = []
    patient = owner = None  # owner: the patient as last committed, for the audit row
    for item in entry["results"]:
        item_key = f"{key}/{item['index']}"
        try:
            rec = repo.record_by_key(s, submission_key=item_key)
            if rec is None:
                if patient is None:
                    patient = repo.get_or_create_patient(
                        s,
                        name=entry["patient"]["name"],
                        patient_code=entry["patient"]["patient_id"],
                    )
                rec = repo.add_record(
                    s,
                    patient=patient,
                    file_name=item["file_name"],
                    sha256=item["sha256"],
                    prediction=item["prediction"],
                    probability=item["probability"],
                    threshold=item["threshold"],
                    uncertain=item["uncertain"],
                    ood=item["ood"],
                    model_version=entry["model_version"],
                    session_id=session_id,
                    user=user,
                    created=created,
                    submission_key=item_key,
                    heatmap_sha256=item.get("heatmap_sha256"),  # absent in older journals
                )
                s.commit()
        except Exception as exc:
            s.rollback()
            if _unavailable(exc):
                raise
            rec = repo.record_by_key(s, submission_key=item_key)  # another process stored it
            if rec is None:
                log.error(
                    "cannot store a record (session %s): %s", session_id[:8], describe_db_error(exc)
                )
                failed.append(item["index"])
                patient = None  # rolled back with the record when it was new: look it up again
                continue
        stored[str(item["index"])] = rec.id
        owner = rec.patient
    try:
        if repo.audit_by_key(s, submission_key=key) is None:
            repo.add_audit(
                s,
                action="classify",
                session_id=session_id,
                user=user,
                patient=owner,
                detail=f"{len(stored)} stored, {entry['errors']} failed",
                created=created,
                submission_key=key,
            )
            s.commit()
    except Exception as exc:
        s.rollback()
        if _unavailable(exc):
            raise
        if repo.audit_by_key(s, submission_key=key) is None:  # else another process wrote it
            log.error(
                "cannot write the audit row (session %s): %s",
                session_id[:8],
                describe_db_error(exc),
            )
    return {"records": stored, "failed": failed}


@dataclass
class PatientHistory:
    """One patient and their stored results, newest first: as table rows and as studies (with
    every review)."""

    name: str
    patient_id: str
    rows: list[dict]
    studies: list[Study] = field(default_factory=list)


class HistoryUnavailable(PneumoError):
    """The database could not be read (the message is for the page; details go nowhere)."""


def patient_history(
    *,
    session_factory: sessionmaker,
    query: str,
    session_id: str,
    user: str = "",
    audit: bool = True,
) -> list[PatientHistory]:
    """Patients matching ``query`` (name part or exact ID) with their records and reviews; each
    patient shown is written to the audit trail as viewed (``audit``: False when the page only
    redraws a history the same session was shown and audited). Raises HistoryUnavailable when
    the database cannot be read or the viewing cannot be audited."""
    try:
        return _patient_history(session_factory, query, session_id, user, audit)
    except Exception as exc:  # noqa: BLE001 - shown as a message, logged by class only
        log.error(
            "cannot read the history (session %s): %s", session_id[:8], describe_db_error(exc)
        )
        raise HistoryUnavailable(
            "The patient history is unavailable: the database cannot be read right now."
        ) from None


def _patient_history(session_factory, query: str, session_id: str, user: str, audit: bool):
    out = []
    with session_factory() as s:
        for patient in repo.find_patients(s, query=query):
            found = repo.patient_records(s, patient_id=patient.id)
            by_record = reviews_of(s, record_ids=[r.id for r in found])
            studies = [study_of(r, patient, by_record.get(r.id, [])) for r in found]
            if audit:
                repo.add_audit(
                    s,
                    action="view_history",
                    session_id=session_id,
                    user=user,
                    patient=patient,
                    detail=f"{len(studies)} records",
                )
            rows = [study_row(study) for study in studies]
            out.append(PatientHistory(patient.name, patient.patient_code, rows, studies))
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
