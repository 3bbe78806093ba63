"""Clinicians' reviews of records: rows are only added, never changed, and what a record's
reviews add up to (its review state and the finding it is labeled with). Keyword-only
functions that take the session they work in; the caller commits."""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from pneumo.errors import PneumoError
from pneumo.storage import repository as repo
from pneumo.storage.tables import FINDINGS, Record, Review

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

STATES = ("awaiting", "agreed", "corrected", "disputed")
"""A record's review state: no review yet; every current review agrees with the model; the
current reviews share one finding that differs from the model's; they differ among themselves."""
NOTE_MAX = 2000
"""Longest review note kept (characters)."""
REVIEWER_MAX = 120


class ReviewInputError(PneumoError):
    """A review that cannot be stored as given (no such record, no reviewer, bad finding)."""


def model_finding(record: Record) -> str:
    """The model's result in the clinicians' terms: a film it did not assess is NOT_ASSESSABLE."""
    if record.ood or record.prediction is None:
        return "NOT_ASSESSABLE"
    return record.prediction


def _clean_note(note: str | None) -> str:
    text = unicodedata.normalize("NFC", note or "")
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    return text.strip()


def add_review(
    session: Session,
    *,
    record_id: int,
    agrees: bool,
    finding: str | None = None,
    note: str = "",
    reviewer: str,
    session_id: str,
) -> Review:
    """Store one review and its audit row. Agreeing takes the model's finding; disagreeing
    needs a different one. A reviewer's second review of a record amends their first: a new
    row that names it (audited as ``amend_review``), the first is kept."""
    record = session.get(Record, record_id)
    if record is None:
        raise ReviewInputError(f"no record {record_id} to review")
    reviewer = " ".join((reviewer or "").split())
    if not reviewer:
        raise ReviewInputError("a review needs the reviewer's name")
    if len(reviewer) > REVIEWER_MAX:
        raise ReviewInputError(f"reviewer name too long (max {REVIEWER_MAX} characters)")
    said = model_finding(record)
    if agrees:
        if finding not in (None, said):
            raise ReviewInputError(f"agreeing with {said} cannot give the finding {finding}")
        finding = said
    elif finding not in FINDINGS:
        raise ReviewInputError(f"disagreeing needs a finding: one of {', '.join(FINDINGS)}")
    elif finding == said:
        raise ReviewInputError(f"the model's result is {said} already: that is agreeing")
    note = _clean_note(note)
    if len(note) > NOTE_MAX:
        raise ReviewInputError(f"note too long ({len(note)} characters, max {NOTE_MAX})")
    previous = session.scalars(
        select(Review)
        .where(Review.record_id == record_id, Review.reviewer == reviewer)
        .order_by(Review.id.desc())
        .limit(1)
    ).first()
    review = Review(
        record_id=record_id,
        reviewer=reviewer,
        session_id=session_id,
        agrees=bool(agrees),
        finding=finding,
        note=note,
        model_version=record.model_version,
        amends_id=previous.id if previous is not None else None,
    )
    session.add(review)
    session.flush()
    detail = f"record {record_id}: {'agrees' if agrees else 'disagrees'}, finding {finding}"
    if previous is not None:
        detail += f", amends review {previous.id}"
    repo.add_audit(
        session,
        action="amend_review" if previous is not None else "review",
        session_id=session_id,
        user=reviewer,
        patient=record.patient,
        detail=f"{detail} (review {review.id})",
    )
    return review


def current_reviews(reviews: Iterable[Review]) -> list[Review]:
    """Each reviewer's latest review (their amendments replace their own earlier ones only)."""
    latest: dict[str, Review] = {}
    for r in sorted(reviews, key=lambda r: r.id):
        latest[r.reviewer] = r
    return sorted(latest.values(), key=lambda r: r.id)


@dataclass(frozen=True)
class ReviewState:
    """What a record's reviews add up to."""

    state: str
    """One of STATES."""
    finding: str | None
    """The clinicians' finding when they share one (agreed or corrected), else None."""


def review_state(reviews: Iterable[Review]) -> ReviewState:
    current = current_reviews(reviews)
    if not current:
        return ReviewState("awaiting", None)
    findings = {r.finding for r in current}
    if len(findings) > 1:
        return ReviewState("disputed", None)
    (finding,) = findings
    return ReviewState("agreed" if all(r.agrees for r in current) else "corrected", finding)


def reviews_of(session: Session, *, record_ids: Iterable[int]) -> dict[int, list[Review]]:
    """Every review of these records, oldest first, by record id (records without: absent)."""
    ids = list(record_ids)
    out: dict[int, list[Review]] = defaultdict(list)
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        stmt = select(Review).where(Review.record_id.in_(chunk)).order_by(Review.id)
        for r in session.scalars(stmt):
            out[r.record_id].append(r)
    return dict(out)


def reviewed_records(session: Session) -> list[tuple[Record, ReviewState]]:
    """Every record with at least one review and what its reviews add up to, oldest first."""
    stmt = select(Record).where(Record.id.in_(select(Review.record_id))).order_by(Record.id)
    records = list(session.scalars(stmt))
    by_record = reviews_of(session, record_ids=[r.id for r in records])
    return [(r, review_state(by_record.get(r.id, []))) for r in records]


def agreement_cases(session: Session):
    """``(cases, disputed, awaiting)`` for ``evaluation.agreement``: one case per reviewed
    record whose current reviews share a finding, and how many are disputed or not reviewed."""
    from sqlalchemy import func

    from pneumo.evaluation.agreement import AgreementCase

    cases, disputed = [], 0
    for record, state in reviewed_records(session):
        if state.finding is None:
            disputed += 1
            continue
        cases.append(
            AgreementCase(
                model_finding(record), state.finding, record.model_version, record.created
            )
        )
    total = session.scalar(select(func.count()).select_from(Record)) or 0
    return cases, disputed, total - len(cases) - disputed
