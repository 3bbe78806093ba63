"""The app's CSV export: its header never changes (users' spreadsheets read it) and its
prediction cells are read from the prediction record's own fields."""

from __future__ import annotations

import csv
import dataclasses
import io

from pneumo.app import session_export as report
from pneumo.app.classify import ImageResult, Submission
from pneumo.inference.predictor import Prediction

HEADER = (
    "time_utc,patient_name,patient_id,file,sha256,result,p_pneumonia,p_normal,confidence,"
    "threshold,uncertain,not_chest_xray,ood_score,model_version,record_id,error"
)


def _rows(*results: ImageResult) -> list[dict]:
    sub = Submission("Ada", "P1", list(results), 0.5, "lite2 test")
    text = report.results_csv([sub]).decode("utf-8-sig")
    assert text.splitlines()[0] == HEADER
    return list(csv.DictReader(io.StringIO(text)))


def test_the_header_is_the_one_spreadsheets_read_and_cells_come_from_the_record():
    record_fields = {f.name for f in dataclasses.fields(Prediction)}
    assert set(report.PREDICTION_CELLS.values()) <= record_fields
    diagnosed = Prediction(
        source="film.png",
        label="PNEUMONIA",
        probability=0.8,
        confidence=0.8,
        threshold=0.4,
        uncertain=False,
        ood_score=1.5,
    )
    unread = ImageResult("broken.png", error="broken.png: not an image")
    film, broken = _rows(ImageResult("film.png", prediction=diagnosed, sha256="ab"), unread)
    assert film["result"] == "Pneumonia" and film["p_pneumonia"] == "0.8000"
    assert film["p_normal"] == "0.2000" and film["threshold"] == "0.4000"
    assert film["uncertain"] == "False" and film["not_chest_xray"] == "False"
    assert film["ood_score"] == "1.5000"
    assert broken["result"] == "error" and broken["p_pneumonia"] == broken["p_normal"] == ""
    assert broken["uncertain"] == "False" and broken["error"] == "broken.png: not an image"
