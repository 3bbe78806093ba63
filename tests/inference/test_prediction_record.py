"""One prediction record, many views: the output columns, their Parquet types and the API's
result are derived from ``Prediction``, and the headers users' scripts read never change."""

from __future__ import annotations

import dataclasses

import pytest

from pneumo.inference.predictor import Prediction

HEADER = "path,class,probability,confidence,uncertain,ood,ood_score,ood_reason,error"
"""``pneumo predict``'s CSV header as users' scripts read it (pneumo 0.x): never renamed or
reordered."""


def test_the_csv_header_is_the_one_users_read(tmp_path):
    from pneumo.inference.rows import COLUMNS, RowWriter, prediction_row

    out = tmp_path / "rows.csv"
    with RowWriter(out) as writer:
        writer.write(prediction_row(Prediction(source="a.jpeg", error="a.jpeg: unreadable")))
    assert out.read_text().splitlines()[0] == HEADER
    assert ",".join(COLUMNS) == HEADER


def test_the_parquet_types_are_those_of_the_record():
    pa = pytest.importorskip("pyarrow")
    from pneumo.inference.rows import arrow_schema

    schema = arrow_schema()
    assert schema.names == HEADER.split(",")
    floats = {"probability", "confidence", "ood_score"}
    flags = {"uncertain", "ood"}
    for name in schema.names:
        expected = pa.float64() if name in floats else pa.bool_() if name in flags else pa.string()
        assert schema.field(name).type == expected, name


def test_rows_round_escape_and_blank_as_before():
    from pneumo.inference.rows import prediction_row

    diagnosed = Prediction(
        source="a.jpeg",
        label="PNEUMONIA",
        probability=0.123456789,
        confidence=0.123456789,
        threshold=0.4,
        uncertain=True,
        ood_score=1.234567,
    )
    assert prediction_row(diagnosed) == {
        "path": "a.jpeg",
        "class": "PNEUMONIA",
        "probability": 0.123457,
        "confidence": 0.123457,
        "uncertain": True,
        "ood": False,
        "ood_score": 1.2346,
        "ood_reason": None,
        "error": None,
    }
    not_assessed = dataclasses.replace(
        diagnosed, label=None, probability=None, confidence=None, ood=True, ood_reason="why"
    )
    row = prediction_row(not_assessed)
    assert row["uncertain"] is None and row["ood"] is True and row["class"] is None
    unreadable = prediction_row(Prediction(source="b.png", error="b.png: bad\nline\x1b[31m"))
    assert unreadable["ood"] is None and unreadable["uncertain"] is None
    assert "\n" not in unreadable["error"] and "\x1b" not in unreadable["error"]


def test_the_api_result_is_the_record_field_by_field():
    """Every shown field of the record is in the API's result, in order, with its type and
    default; ``source`` is called ``filename`` there, and nothing else is added or lost."""
    import typing

    from pneumo.api.schemas import PredictionOut

    hints = typing.get_type_hints(Prediction)
    shown = [f for f in dataclasses.fields(Prediction) if f.name != "model_probability"]
    api = list(PredictionOut.model_fields.items())
    assert [name for name, _ in api] == ["filename"] + [f.name for f in shown[1:]]
    for f, (name, info) in zip(shown, api, strict=True):
        assert info.annotation == hints[f.name], name
        assert info.is_required() == (f.default is dataclasses.MISSING), name
        if not info.is_required():
            assert info.default == f.default, name
        assert info.description, name
    pred = Prediction(source="x.png", label="NORMAL", probability=0.1, model_probability=0.1)
    out = PredictionOut.of(pred).model_dump()
    assert out["filename"] == "x.png" and out["probability"] == 0.1
    assert "model_probability" not in out and "source" not in out
