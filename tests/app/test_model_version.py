"""The model version in records, the CSV export and the PDF names the weights: 8 hex digits of
the training data fingerprint after its ``sha256:`` prefix, never one."""

from __future__ import annotations

import csv
import io

from app_helpers import xray_bytes

from pneumo.app import records
from pneumo.app import session_export as report
from pneumo.app.intake import InputItem, read_patient
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database

FINGERPRINT = "sha256:0123456789abcdef" + "0" * 48


def test_records_csv_and_pdf_show_eight_hex_digits(predictor, monkeypatch, tmp_path):
    monkeypatch.setattr(predictor.metadata, "data_fingerprint", FINGERPRINT)
    factory = open_database(str(tmp_path / "records.db"))
    sub = records.classify_and_store(
        items=[InputItem("a.png", xray_bytes(0))],
        patient=read_patient("Ada"),
        predictor=predictor,
        session_factory=factory,
        session_id="version",
    )
    assert sub.model_version.endswith("+sha256:01234567")
    with factory() as s:
        (patient,) = repo.find_patients(s, query="Ada")
        (stored,) = repo.patient_records(s, patient_id=patient.id)
        assert stored.model_version.endswith("+sha256:01234567")
    (row,) = csv.DictReader(io.StringIO(report.results_csv([sub]).decode("utf-8-sig")))
    assert row["model_version"].endswith("+sha256:01234567")
    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO(report.results_pdf([sub], heatmaps=False)))
    assert "sha256:01234567" in "".join(page.extract_text() for page in pdf.pages)
