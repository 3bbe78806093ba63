"""Clinicians' reviews in the records database (SQLite and PostgreSQL: ``db_url``): agreeing,
correcting, amending without overwriting, two clinicians at once, and the audit rows of each."""

from __future__ import annotations

import threading

import pytest

from pneumo.storage import repository as repo
from pneumo.storage.db import open_database
from pneumo.storage.reviews import (
    ReviewInputError,
    add_review,
    review_state,
    reviewed_records,
    reviews_of,
)
from pneumo.storage.tables import Review


@pytest.fixture
def factory(db_url):
    return open_database(db_url)


def _record(factory, prediction="PNEUMONIA", ood=False) -> int:
    with factory() as s:
        patient = repo.get_or_create_patient(s, name="Ada Review", patient_code="R-1")
        rec = repo.add_record(
            s,
            patient=patient,
            file_name="chest.png",
            sha256="ab" * 32,
            prediction=None if ood else prediction,
            probability=None if ood else 0.9,
            threshold=0.5,
            ood=ood,
            model_version="m@1",
            session_id="classify",
        )
        s.commit()
        return rec.id


def _review(factory, record_id, reviewer, agrees, finding=None, note=""):
    with factory() as s:
        r = add_review(
            s,
            record_id=record_id,
            agrees=agrees,
            finding=finding,
            note=note,
            reviewer=reviewer,
            session_id=f"s-{reviewer}",
        )
        s.commit()
        return r.id


def _state(factory, record_id):
    with factory() as s:
        return review_state(reviews_of(s, record_ids=[record_id]).get(record_id, []))


def test_agree_and_correct_are_stored_with_reviewer_model_and_audit(factory):
    agreed, corrected = _record(factory), _record(factory, "NORMAL")
    assert _state(factory, agreed).state == "awaiting"
    _review(factory, agreed, "Dr Grey", True)
    _review(factory, corrected, "Dr Grey", False, "PNEUMONIA", "  consolidation, right base ")
    assert (_state(factory, agreed).state, _state(factory, agreed).finding) == (
        "agreed",
        "PNEUMONIA",
    )
    assert (_state(factory, corrected).state, _state(factory, corrected).finding) == (
        "corrected",
        "PNEUMONIA",
    )
    with factory() as s:
        rows = s.query(Review).order_by(Review.id).all()
        assert [(r.reviewer, r.agrees, r.finding, r.model_version) for r in rows] == [
            ("Dr Grey", True, "PNEUMONIA", "m@1"),
            ("Dr Grey", False, "PNEUMONIA", "m@1"),
        ]
        assert rows[1].note == "consolidation, right base" and rows[0].created is not None
        audit = [(e.action, e.user, e.detail) for e in reversed(repo.audit_events(s))]
    assert audit == [
        ("review", "Dr Grey", f"record {agreed}: agrees, finding PNEUMONIA (review {rows[0].id})"),
        (
            "review",
            "Dr Grey",
            f"record {corrected}: disagrees, finding PNEUMONIA (review {rows[1].id})",
        ),
    ]


def test_an_amendment_is_a_new_row_and_never_overwrites(factory):
    rid = _record(factory)
    first = _review(factory, rid, "Dr Grey", True, note="looks right")
    second = _review(factory, rid, "Dr Grey", False, "NOT_ASSESSABLE", "rotated film")
    with factory() as s:
        rows = reviews_of(s, record_ids=[rid])[rid]
        assert [(r.id, r.amends_id, r.note) for r in rows] == [
            (first, None, "looks right"),
            (second, first, "rotated film"),
        ]
        (event, _) = repo.audit_events(s)[:2]
        assert event.action == "amend_review" and f"amends review {first}" in event.detail
    state = _state(factory, rid)
    assert (state.state, state.finding) == ("corrected", "NOT_ASSESSABLE")


def test_reviews_that_cannot_be_stored_as_given_are_refused(factory):
    rid, ood = _record(factory), _record(factory, ood=True)
    cases = [
        (dict(record_id=rid, agrees=False, finding="PNEUMONIA"), "that is agreeing"),
        (dict(record_id=rid, agrees=True, finding="NORMAL"), "cannot give the finding"),
        (dict(record_id=rid, agrees=False, finding="MAYBE"), "needs a finding"),
        (dict(record_id=rid, agrees=True, reviewer="  "), "reviewer's name"),
        (dict(record_id=rid, agrees=True, note="x" * 2001), "note too long"),
        (dict(record_id=999_999, agrees=True), "no record 999999"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("reviewer", "Dr Grey")
        with factory() as s, pytest.raises(ReviewInputError, match=message):
            add_review(s, session_id="s", **kwargs)
    # a film the model did not assess: agreeing means "not assessable"
    _review(factory, ood, "Dr Grey", True)
    assert _state(factory, ood).finding == "NOT_ASSESSABLE"
    with factory() as s:
        assert s.query(Review).count() == 1


def test_two_clinicians_reviewing_at_once_both_keep_their_review(factory):
    """Each saves in their own session at the same moment; neither review is lost, and their
    different findings make the result disputed (left out of labels and agreement)."""
    rid = _record(factory)
    start = threading.Barrier(2)
    errors = []

    def clinician(name, agrees, finding):
        try:
            with factory() as s:
                start.wait(timeout=30)
                add_review(
                    s,
                    record_id=rid,
                    agrees=agrees,
                    finding=finding,
                    note=f"by {name}",
                    reviewer=name,
                    session_id=name,
                )
                s.commit()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=clinician, args=("Dr A", True, None)),
        threading.Thread(target=clinician, args=("Dr B", False, "NORMAL")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with factory() as s:
        rows = reviews_of(s, record_ids=[rid])[rid]
        assert sorted((r.reviewer, r.note, r.amends_id) for r in rows) == [
            ("Dr A", "by Dr A", None),
            ("Dr B", "by Dr B", None),
        ]
        assert sorted(e.user for e in repo.audit_events(s) if e.action == "review") == [
            "Dr A",
            "Dr B",
        ]
        ((record, state),) = reviewed_records(s)
    assert record.id == rid and (state.state, state.finding) == ("disputed", None)
    # one of them amends to agree with the other: settled, both first reviews still stored
    _review(factory, rid, "Dr B", True)
    assert _state(factory, rid).state == "agreed"
    with factory() as s:
        assert s.query(Review).count() == 3
