"""The app gives no diagnosis for a DICOM object its header says is not a chest radiograph
(issue 18, item 4): the page's result, the stored record and the PDF carry the header's reason."""

from __future__ import annotations

import io
from pathlib import Path

from app_helpers import dicom_bytes
from pydicom.data import get_testdata_file

from pneumo.app import records
from pneumo.app import session_export as report
from pneumo.app.intake import InputItem, read_patient
from pneumo.storage import repository as repo
from pneumo.storage.db import open_database

CT_REASON = "DICOM modality CT (computed tomography) is not a chest radiograph"


def test_a_ct_slice_is_stored_and_reported_as_not_assessed(predictor, tmp_path):
    factory = open_database(str(tmp_path / "records.db"))
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # a real axial CT slice
    sub = records.classify_and_store(
        items=[InputItem("film.dcm", dicom_bytes()), InputItem("ct.dcm", ct)],
        patient=read_patient("Ada"),
        predictor=predictor,
        session_factory=factory,
        session_id="dicom",
    )
    film, ct_result = sub.results
    assert ct_result.prediction.ood and not ct_result.store_error
    assert ct_result.prediction.ood_reason == f"not assessed: {CT_REASON}"
    assert ct_result.prediction.label is None and ct_result.prediction.probability is None
    assert CT_REASON not in (film.prediction.ood_reason or "")
    with factory() as s:
        (patient,) = repo.find_patients(s, query="Ada")
        stored = {r.file_name: r for r in repo.patient_records(s, patient_id=patient.id)}
    assert stored["ct.dcm"].prediction is None and stored["ct.dcm"].probability is None

    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO(report.results_pdf([sub], heatmaps=False)))
    text = " ".join("".join(page.extract_text() for page in pdf.pages).split())
    ct_block = text[text.index("ct.dcm:") :]
    assert "no diagnosis is given" in ct_block and "DICOM modality CT" in ct_block
    assert "P(pneumonia)" not in ct_block
