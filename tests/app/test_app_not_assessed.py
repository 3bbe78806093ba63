"""The app gives no diagnosis for a film flagged out of distribution: not on the records, not
in the history, not in the CSV export, not in the PDF (issue 18)."""

from __future__ import annotations

import csv
import io

from app_helpers import colour_photo_bytes, xray_bytes

from pneumo.app import records
from pneumo.app import session_export as report
from pneumo.app.intake import InputItem, read_patient
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database


def test_an_ood_film_is_stored_exported_and_shown_without_a_diagnosis(predictor, tmp_path):
    factory = open_database(str(tmp_path / "records.db"))
    sub = records.classify_and_store(
        items=[InputItem("film.png", xray_bytes(0)), InputItem("cat.png", colour_photo_bytes())],
        patient=read_patient("Ada"),
        predictor=predictor,
        session_factory=factory,
        session_id="ood",
    )
    film, cat = sub.results
    assert cat.prediction.ood and cat.record_id is not None and not cat.store_error
    with factory() as s:
        (patient,) = repo.find_patients(s, query="Ada")
        stored = {r.file_name: r for r in repo.patient_records(s, patient_id=patient.id)}
    assert stored["cat.png"].prediction is None and stored["cat.png"].probability is None
    assert stored["film.png"].prediction in ("NORMAL", "PNEUMONIA")

    (history,) = records.patient_history(session_factory=factory, query="Ada", session_id="ood")
    shown = {row["file"]: row for row in history.rows}
    assert shown["cat.png"]["result"] == "not a chest X-ray (not diagnosed)"
    assert shown["cat.png"]["P(pneumonia)"] is None
    assert shown["film.png"]["P(pneumonia)"] is not None

    rows = {
        r["file"]: r
        for r in csv.DictReader(io.StringIO(report.results_csv([sub]).decode("utf-8-sig")))
    }
    assert rows["cat.png"]["result"] == "not a chest X-ray (not diagnosed)"
    for column in ("p_pneumonia", "p_normal", "confidence"):
        assert rows["cat.png"][column] == "", column
    assert rows["film.png"]["p_pneumonia"] != ""

    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO(report.results_pdf([sub], heatmaps=False)))
    text = " ".join("".join(page.extract_text() for page in pdf.pages).split())
    cat_block = text[text.index("cat.png:") :]
    assert "no diagnosis is given" in cat_block and "colour image" in cat_block
    assert "P(pneumonia)" not in cat_block and "confidence" not in cat_block
    assert "P(pneumonia)" in text[: text.index("cat.png:")]  # the film keeps its numbers
