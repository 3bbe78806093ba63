"""A stored result as the history shows it: the record, its patient and its reviews (one
``Study`` each), the history's table row, and the filters on review state and date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from pneumo.app.display import display_result
from pneumo.storage.reviews import review_state

FINDING_NAMES = {"NORMAL": "Normal", "PNEUMONIA": "Pneumonia", "NOT_ASSESSABLE": "Not assessable"}


def display_finding(finding: str | None) -> str:
    return FINDING_NAMES.get(finding or "", finding or "")


@dataclass(frozen=True)
class ReviewView:
    """One stored review, as shown and exported."""

    id: int
    reviewer: str
    created: datetime | None
    agrees: bool
    finding: str
    note: str
    amends_id: int | None


@dataclass
class Study:
    """One stored result with its patient and every review of it (oldest first)."""

    record_id: int
    patient_name: str
    patient_id: str
    created: datetime | None
    file_name: str
    sha256: str
    prediction: str | None
    probability: float | None
    threshold: float
    uncertain: bool
    ood: bool
    model_version: str
    heatmap_sha256: str | None
    user: str
    state: str
    """The review state (``storage.reviews.STATES``)."""
    finding: str | None
    """The clinicians' shared finding (agreed or corrected), else None."""
    reviews: list[ReviewView] = field(default_factory=list)

    @property
    def result(self) -> str:
        return display_result(self.prediction, self.ood)

    @property
    def latest(self) -> ReviewView | None:
        return self.reviews[-1] if self.reviews else None

    @property
    def note(self) -> str:
        return self.latest.note if self.latest else ""


def study_of(record, patient, reviews) -> Study:
    """A ``Study`` from a record row, its patient row and its review rows."""
    state = review_state(reviews)
    return Study(
        record_id=record.id,
        patient_name=patient.name,
        patient_id=patient.patient_code,
        created=record.created,
        file_name=record.file_name,
        sha256=record.sha256,
        prediction=record.prediction,
        probability=record.probability,
        threshold=record.threshold,
        uncertain=record.uncertain,
        ood=record.ood,
        model_version=record.model_version,
        heatmap_sha256=record.heatmap_sha256,
        user=record.user,
        state=state.state,
        finding=state.finding,
        reviews=[
            ReviewView(r.id, r.reviewer, r.created, r.agrees, r.finding, r.note, r.amends_id)
            for r in reviews
        ],
    )


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def study_row(study: Study) -> dict:
    """The history table's row for one study."""
    latest = study.latest
    return {
        "time (UTC)": _utc(study.created),
        "file": study.file_name,
        "result": study.result,
        # records stored before OOD films lost their numbers still hold one
        "P(pneumonia)": None
        if study.ood or study.probability is None
        else round(study.probability, 4),
        "threshold": round(study.threshold, 4),
        "uncertain": study.uncertain,
        "model": study.model_version,
        "review": study.state,
        "finding": display_finding(study.finding),
        "reviewer": latest.reviewer if latest else "",
        "note": study.note,
        "sha256": study.sha256[:16],
        "user": study.user,
        "record": study.record_id,
    }


def filter_studies(
    studies: list[Study],
    *,
    states: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[Study]:
    """The studies in one of ``states`` (all when None or empty) classified between ``start``
    and ``end`` (whole days, UTC, both included)."""
    out = []
    for s in studies:
        day = s.created.date() if s.created else None
        if states and s.state not in states:
            continue
        if start and (day is None or day < start):
            continue
        if end and (day is None or day > end):
            continue
        out.append(s)
    return out
