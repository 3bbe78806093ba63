"""The review workflow on the page (streamlit.testing's AppTest: real script, tiny model, real
SQLite database and film store): review under each result, the history with films, states,
filters, the film viewer and the selection's exports, each step in the audit trail."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest
from app_helpers import PAGE, xray_bytes
from streamlit.testing.v1 import AppTest

from pneumo.app import reviews
from pneumo.app.history_export import history_csv

pytestmark = pytest.mark.slow


def _rows(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _run(at):
    at.run()
    assert not at.exception, at.exception
    return at


def _classified(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMO_FILMS", str(tmp_path / "films"))
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.sidebar.text_input(key="reviewer_name").input("Dr Grey")
    next(t for t in at.text_input if t.label == "Patient name").input("Ada Review")
    at.file_uploader[0].set_value(
        [("a.png", xray_bytes(1), "image/png"), ("b.png", xray_bytes(2), "image/png")]
    )
    next(b for b in at.button if b.label == "Classify").click()
    return _run(at)


def _review(at, form_key, choice_prefix, note=""):
    radio = next(r for r in at.radio if r.form_id == form_key)
    radio.set_value(next(o for o in radio.options if o.startswith(choice_prefix)))
    if note:
        next(t for t in at.text_area if t.form_id == form_key).input(note)
    next(b for b in at.button if b.form_id == form_key and b.label == "Save review").click()
    return _run(at)


def test_review_history_viewer_and_export(app_env, monkeypatch, tmp_path):
    at = _classified(app_env, monkeypatch, tmp_path)
    assert any("2 of 2 saved result(s) await" in i.value for i in at.info)
    (a, b) = _rows(app_env, "select id, prediction from records order by id")
    # the films and their heatmaps are kept by hash, outside the database
    kept = {p.name for p in (tmp_path / "films").rglob("*") if p.is_file()}
    assert {h for (h,) in _rows(app_env, "select sha256 from records")} <= kept
    assert len(kept) == 4
    at = _review(at, f"review_result_{a[0]}", "Agree")
    other = "Disagree: normal" if b[1] == "PNEUMONIA" else "Disagree: pneumonia"
    at = _review(at, f"review_result_{b[0]}", other, note="Hazy, see lateral film")
    assert any(s.value.startswith("Review ") and "saved" in s.value for s in at.success)
    assert any("All 2 saved result(s) have been reviewed" in s.value for s in at.success)
    stored = _rows(app_env, "select record_id, reviewer, agrees, note from reviews order by id")
    assert stored == [(a[0], "Dr Grey", 1, ""), (b[0], "Dr Grey", 0, "Hazy, see lateral film")]

    next(t for t in at.text_input if t.label == "Find patient (name or ID)").input("ada")
    next(b for b in at.button if b.label == "Show history").click()
    at = _run(at)
    (table,) = at.dataframe
    assert dict(zip(table.value["file"], table.value["review"], strict=True)) == {
        "a.png": "agreed",
        "b.png": "corrected",
    }
    at.radio(key="history_states").set_value("corrected")
    at = _run(at)
    (table,) = at.dataframe
    assert list(table.value["file"]) == ["b.png"]
    assert list(table.value["note"]) == ["Hazy, see lateral film"]
    at.button(key=f"open_{b[0]}").click()
    at = _run(at)
    assert any(h.value.startswith("Film: b.png") for h in at.subheader)
    assert any("Full resolution: 96 x 96 pixels" in c.value for c in at.caption)
    at.toggle(key=f"overlay_{b[0]}").set_value(True)
    at.select_slider(key=f"zoom_{b[0]}").set_value("2x")
    at = _run(at)
    assert any("2x: pixels 24-72 x 24-72 of 96 x 96" in c.value for c in at.caption)
    actions = [r[0] for r in _rows(app_env, "select action from audit order by id")]
    assert actions == ["classify", "review", "review", "view_history", "view_film"]


def test_a_review_while_the_database_is_down_fails_clearly(tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    broken = sessionmaker(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    with pytest.raises(reviews.ReviewUnavailable, match="Review not saved: the database is"):
        reviews.save_review(
            session_factory=broken,
            record_id=1,
            agrees=True,
            finding=None,
            note="",
            reviewer="Dr Grey",
            session_id="s",
        )


def test_history_csv_holds_the_review_and_defuses_formulas():
    from datetime import UTC, datetime

    from pneumo.app.studies import ReviewView, Study

    when = datetime(2027, 2, 1, 9, 30, tzinfo=UTC)
    study = Study(
        record_id=7,
        patient_name="=Ada",
        patient_id="P-7",
        created=when,
        file_name="b.png",
        sha256="ab" * 32,
        prediction="PNEUMONIA",
        probability=0.8123,
        threshold=0.5,
        uncertain=False,
        ood=False,
        model_version="m@1",
        heatmap_sha256=None,
        user="",
        state="corrected",
        finding="NORMAL",
        reviews=[ReviewView(3, "Dr Grey", when, False, "NORMAL", "clear lungs", None)],
    )
    (row,) = csv.DictReader(io.StringIO(history_csv([study]).decode("utf-8-sig")))
    assert row["patient_name"] == "'=Ada"
    assert (row["result"], row["p_pneumonia"], row["review_state"]) == (
        "Pneumonia",
        "0.8123",
        "corrected",
    )
    assert (row["clinician_finding"], row["reviewer"], row["note"]) == (
        "Normal",
        "Dr Grey",
        "clear lungs",
    )
