"""`pneumo evaluate --stress` on the official val split with the bundled model."""

from __future__ import annotations

import json

import pytest

from pneumo.evaluation.stress import SHIFTS, subgroup

pytestmark = pytest.mark.realdata


def test_stress_report_covers_every_shift_and_subgroup(real_data_root, tmp_path):
    from pneumo.evaluation.evaluate import evaluate

    report = evaluate(data=real_data_root, split="val", output=tmp_path / "val.json", stress=True)
    stress = json.loads((tmp_path / "val.stress.json").read_text())
    assert list(stress["shifts"]) == list(SHIFTS)
    # Without a shift the battery gives the plain evaluation's figures.
    assert stress["shifts"]["none"]["roc_auc"] == pytest.approx(report["roc_auc"])
    assert stress["shifts"]["none"]["accuracy"] == pytest.approx(report["accuracy"])
    # Real shifts change what the model sees: some figure must move.
    assert len({s["accuracy"] for s in stress["shifts"].values()}) > 1
    groups = stress["shifts"]["none"]["subgroups"]
    assert sum(g["n"] for g in groups.values()) == 16
    markdown = (tmp_path / "val.stress.md").read_text()
    assert "| JPEG quality 20 |" in markdown and "NORMAL (NORMAL2-IM series)" in markdown
    # Seeded: a second run gives the same figures.
    evaluate(data=real_data_root, split="val", output=tmp_path / "again.json", stress=True)
    assert json.loads((tmp_path / "again.stress.json").read_text())["shifts"] == stress["shifts"]


@pytest.mark.parametrize(
    ("name", "label", "group"),
    [
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL", "NORMAL (NORMAL2-IM series)"),
        ("IM-0115-0001.jpeg", "NORMAL", "NORMAL (IM series)"),
        ("person1_bacteria_1.jpeg", "PNEUMONIA", "PNEUMONIA (bacterial)"),
        ("person1_virus_6.jpeg", "PNEUMONIA", "PNEUMONIA (viral)"),
        ("scan.png", "PNEUMONIA", "PNEUMONIA (other)"),
    ],
)
def test_subgroups_follow_the_file_names(name, label, group):
    assert subgroup(f"test/{label}/{name}", label) == group
