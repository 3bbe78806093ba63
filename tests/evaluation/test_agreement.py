"""The agreement report: counts, sensitivity and specificity against the clinicians'
findings with Wilson intervals, by model version and month; and `pneumo report agreement` over
a real records database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pneumo.cli import main
from pneumo.evaluation.agreement import AgreementCase, Proportion, agreement_summary


def _cases(model, clinician, n, version="m@1", month=1):
    when = datetime(2027, month, 5, tzinfo=UTC)
    return [AgreementCase(model, clinician, version, when) for _ in range(n)]


def test_figures_by_version_and_month():
    cases = (
        _cases("PNEUMONIA", "PNEUMONIA", 18)
        + _cases("NORMAL", "PNEUMONIA", 2)
        + _cases("NORMAL", "NORMAL", 9, "m@2", month=2)
        + _cases("PNEUMONIA", "NORMAL", 1, "m@2", month=2)
        + _cases("NOT_ASSESSABLE", "NOT_ASSESSABLE", 1, "m@2", month=2)
    )
    report = agreement_summary(cases, disputed=2, awaiting=5)
    overall = report.overall
    assert overall.reviewed == 31 and overall.not_assessable == 1
    assert (overall.agreement.k, overall.agreement.n) == (28, 31)
    assert overall.sensitivity.value == pytest.approx(0.9)
    assert overall.specificity.value == pytest.approx(0.9)
    # Wilson interval of 18/20 (scipy): about 0.699 to 0.972
    assert overall.sensitivity.low == pytest.approx(0.699, abs=1e-3)
    assert overall.sensitivity.high == pytest.approx(0.972, abs=1e-3)
    assert [g.name for g in report.by_model] == ["m@1", "m@2"]
    assert report.by_model[1].sensitivity == Proportion(0, 0, None, None, None)
    assert [(g.name, g.reviewed) for g in report.by_month] == [("2027-01", 20), ("2027-02", 11)]
    assert (report.disputed, report.awaiting) == (2, 5)


def test_report_agreement_command_reads_the_records(tmp_path, capsys):
    from pneumo.storage import repository as repo
    from pneumo.storage.db import open_database
    from pneumo.storage.reviews import add_review

    db = tmp_path / "records.db"
    factory = open_database(db)
    with factory() as s:
        patient = repo.get_or_create_patient(s, name="Ada", patient_code="")
        for i, (said, found) in enumerate(
            [
                ("PNEUMONIA", "PNEUMONIA"),
                ("NORMAL", "PNEUMONIA"),
                ("NORMAL", "NORMAL"),
                (None, None),
            ]
        ):
            rec = repo.add_record(
                s,
                patient=patient,
                file_name=f"{i}.png",
                sha256=f"{i:064x}",
                prediction=said,
                probability=0.5,
                threshold=0.5,
                model_version="m@1",
                session_id="s",
            )
            if found:
                add_review(
                    s,
                    record_id=rec.id,
                    agrees=said == found,
                    finding=None if said == found else found,
                    reviewer="Dr Grey",
                    session_id="s",
                )
        s.commit()
    assert main(["report", "agreement", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "Reviewed results: 3; disputed (left out): 0; awaiting review: 1" in text
    assert "| all | 3 | 66.7% (" in text and "50.0% (" in text  # sensitivity 1 of 2
    assert main(["report", "agreement", "--db", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall"]["specificity"]["k"] == 1 and data["by_model"][0]["name"] == "m@1"
