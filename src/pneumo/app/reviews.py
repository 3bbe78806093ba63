"""The clinician's review from the page: save one (agree, or disagree with a finding, and a
note), the review states of the results on screen, a film opened again from the history and
the history's exports, each in the audit trail. Database failures become one clear message
(logged by error class, never with a patient's name); a review is never half saved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pneumo.app.studies import ReviewView, Study, study_of
from pneumo.errors import PneumoError
from pneumo.storage import repository as repo
from pneumo.storage.db import describe_db_error
from pneumo.storage.reviews import ReviewInputError, add_review, reviews_of
from pneumo.storage.tables import Record

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from pneumo.storage.films import FilmStore

log = logging.getLogger(__name__)

REVIEW_UNAVAILABLE = (
    "Review not saved: the database is unavailable right now. Your review is still in the "
    "form; save it again when the database is back."
)


class ReviewUnavailable(PneumoError):
    """The database could not be used for a review (the message is for the page)."""


def save_review(
    *,
    session_factory: sessionmaker,
    record_id: int,
    agrees: bool,
    finding: str | None,
    note: str,
    reviewer: str,
    session_id: str,
) -> ReviewView:
    """Store the review and its audit row in one transaction. ReviewInputError for a review
    that cannot be stored as given, ReviewUnavailable when the database fails."""
    try:
        with session_factory() as s:
            r = add_review(
                s,
                record_id=record_id,
                agrees=agrees,
                finding=finding,
                note=note,
                reviewer=reviewer,
                session_id=session_id,
            )
            s.commit()
            return ReviewView(r.id, r.reviewer, r.created, r.agrees, r.finding, r.note, r.amends_id)
    except ReviewInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - one message for the page, the class for the log
        log.error("cannot save a review (session %s): %s", session_id[:8], describe_db_error(exc))
        raise ReviewUnavailable(REVIEW_UNAVAILABLE) from None


def studies_by_id(*, session_factory: sessionmaker, record_ids: list[int]) -> dict[int, Study]:
    """The stored results with these ids and their reviews (for the results on screen);
    ReviewUnavailable when the database cannot be read."""
    if not record_ids:
        return {}
    try:
        with session_factory() as s:
            rows = [s.get(Record, i) for i in record_ids]
            by_record = reviews_of(s, record_ids=record_ids)
            return {
                r.id: study_of(r, r.patient, by_record.get(r.id, [])) for r in rows if r is not None
            }
    except Exception as exc:  # noqa: BLE001
        log.error("cannot read review states: %s", describe_db_error(exc))
        raise ReviewUnavailable(
            "Review states are unavailable: the database cannot be read."
        ) from None


@dataclass
class OpenedFilm:
    """A stored result opened again: its study, the film's bytes and the heatmap's (None
    when the store does not hold them)."""

    study: Study
    film: bytes | None
    heat: bytes | None


def open_film(
    *,
    session_factory: sessionmaker,
    films: FilmStore,
    record_id: int,
    session_id: str,
    user: str,
    audit: bool = True,
) -> OpenedFilm:
    """The record's study, film and heatmap; the opening is audited (``view_film``) unless
    ``audit`` is False (the page redrawing a film this session opened). ReviewUnavailable when
    the database fails."""
    try:
        with session_factory() as s:
            record = s.get(Record, record_id)
            if record is None:
                raise ReviewInputError(f"no record {record_id}")
            study = study_of(
                record, record.patient, reviews_of(s, record_ids=[record_id]).get(record_id, [])
            )
            if audit:
                repo.add_audit(
                    s,
                    action="view_film",
                    session_id=session_id,
                    user=user,
                    patient=record.patient,
                    detail=f"record {record_id}",
                )
                s.commit()
    except ReviewInputError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.error("cannot open a film (session %s): %s", session_id[:8], describe_db_error(exc))
        raise ReviewUnavailable("The film cannot be opened: the database cannot be read.") from None
    heat = films.get(study.heatmap_sha256) if study.heatmap_sha256 else None
    return OpenedFilm(study, films.get(study.sha256), heat)


def audit_history_export(
    *,
    session_factory: sessionmaker,
    studies: list[Study],
    session_id: str,
    user: str,
    kind: str,
) -> None:
    """One ``export`` audit row per patient in an exported history selection (naming its
    records); a failure is logged by class and does not stop the export."""
    by_patient: dict[int, list[int]] = {}
    try:
        with session_factory() as s:
            for study in studies:
                record = s.get(Record, study.record_id)
                if record is not None:
                    by_patient.setdefault(record.patient_id, []).append(record.id)
            for ids in by_patient.values():
                repo.add_audit(
                    s,
                    action="export",
                    session_id=session_id,
                    user=user,
                    patient=s.get(Record, ids[0]).patient,
                    detail=f"{kind}, history selection, records {','.join(map(str, ids))}"[:2000],
                )
            s.commit()
    except Exception as exc:  # noqa: BLE001 - the export itself still works
        log.error("cannot audit an export (session %s): %s", session_id[:8], describe_db_error(exc))
