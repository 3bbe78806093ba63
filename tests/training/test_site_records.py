"""`pneumo adapt --from-records`: the reviewed films of the app's records as the labeled site
set; too few reviewed films are refused as `--images` refuses too few labeled films, in
terms of the records (the success path runs on real films in tests/app/test_browser_review.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pneumo.cli import main
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database
from pneumo.storage.films import FilmStoreSettings, open_film_store
from pneumo.storage.reviews import add_review
from pneumo.training.site_records import reviewed_films


def _film(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def _reviewed_db(tmp_path, reviews):
    """A records database whose records got ``reviews`` [(model said, [(reviewer, found)])];
    every film kept in films/ beside it except the last one's."""
    db = tmp_path / "records.db"
    factory = open_database(db)
    store = open_film_store(FilmStoreSettings(str(tmp_path / "films")), factory)
    with factory() as s:
        patient = repo.get_or_create_patient(s, name="Ada", patient_code="")
        for i, (said, found) in enumerate(reviews):
            data = _film(i)
            sha = store.put(data) if i < len(reviews) - 1 else "f" * 64
            rec = repo.add_record(
                s,
                patient=patient,
                file_name=f"{i}.png",
                sha256=sha,
                prediction=said,
                probability=0.5,
                threshold=0.5,
                model_version="m@1",
                session_id="s",
            )
            for who, finding in found:
                add_review(
                    s,
                    record_id=rec.id,
                    agrees=finding == said,
                    finding=None if finding == said else finding,
                    reviewer=who,
                    session_id="s",
                )
        s.commit()
    return db, factory


def test_labels_are_the_clinicians_findings_and_unsettled_ones_are_left_out(tmp_path):
    _, factory = _reviewed_db(
        tmp_path,
        [
            ("PNEUMONIA", [("A", "PNEUMONIA")]),
            ("PNEUMONIA", [("A", "NORMAL")]),  # corrected: NORMAL
            ("NORMAL", [("A", "NORMAL"), ("B", "PNEUMONIA")]),  # disputed
            ("NORMAL", [("A", "NOT_ASSESSABLE")]),
            ("NORMAL", []),  # awaiting
            ("NORMAL", [("A", "NORMAL")]),
        ],
    )
    films, left_out = reviewed_films(factory)
    assert [(f.record_id, f.label) for f in films] == [
        (1, "PNEUMONIA"),
        (2, "NORMAL"),
        (6, "NORMAL"),
    ]
    assert left_out == {"disputed": 1, "not assessable": 1}


def test_too_few_reviewed_films_are_refused_naming_the_records(tmp_path, capsys):
    db, _ = _reviewed_db(
        tmp_path,
        [("PNEUMONIA", [("A", "PNEUMONIA")])] * 3 + [("NORMAL", [("A", "NORMAL")])] * 2,
    )
    out = tmp_path / "adapted"
    assert main(["adapt", "--from-records", str(db), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"reviewed records in sqlite:///{db}: too few reviewed films" in err
    # the last film was not kept: 3 PNEUMONIA reviewed, 2 usable NORMAL minus the missing one
    assert "(1 NORMAL, 3 PNEUMONIA)" in err and "need at least 20 of each class" in err
    assert not out.exists()
