"""`pneumo evaluate` with no --split and no --output: it evaluates a split that exists (never
inventing a `test` the data root lacks), says which, and writes the report to a default path."""

from __future__ import annotations

import json

import pytest

from pneumo.cli import main
from synthetic import write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on a data root without a test folder (like the shared copy)."""
    from pneumo.training.config import TrainConfig
    from pneumo.training.train import train

    root = tmp_path_factory.mktemp("data")
    data = write_dataset(root / "chest_xray", {"train": (16, 16), "val": (2, 2)})
    cfg = TrainConfig(
        backbone="test_efficientnet",
        pretrained=False,
        data=data,
        output=root / "runs" / "tiny",
        mode="frozen",
        epochs=1,
        batch_size=8,
        precision="fp32",
        workers=0,
        val_fraction=0.25,
    )
    run = train(cfg)
    return data, run.run_dir


def test_without_a_test_split_the_default_is_the_models_validation_films(
    trained, tmp_path, monkeypatch, capsys
):
    data, run_dir = trained
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", str(run_dir / "model"), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "runs" / "eval-tiny-validation" / "report.json"
    assert f"report: {path.relative_to(tmp_path)}" in out
    report = json.loads(path.read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert report["n"] == config["n_val"]  # the films the model was validated on, all of them
    assert report["split"].startswith("validation") and "threshold was placed" in report["split"]
    assert "validation" in out and "optimistic" in out
    rows = (path.parent / "report_predictions.csv").read_text().splitlines()
    assert all(row.startswith("train/") for row in rows[1:])  # carved from train, not val/ or test/


def test_with_a_test_split_the_default_is_the_test_split(trained, tmp_path, monkeypatch):
    data, run_dir = trained
    with_test = write_dataset(tmp_path / "chest_xray", {"train": (4, 4), "test": (3, 2)})
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--model", str(run_dir / "model"), "--data", str(with_test)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "runs" / "eval-tiny-test" / "report.json").read_text())
    assert report["split"] == "test" and (report["n_normal"], report["n_pneumonia"]) == (3, 2)


def test_an_explicit_test_split_that_is_missing_is_a_one_line_error(
    trained, tmp_path, monkeypatch, capsys
):
    data, run_dir = trained
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--model", str(run_dir / "model"), "--data", str(data), "--split", "test"]
    assert main(argv) == 2
    assert "split 'test' not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_model_without_a_training_record_and_no_test_split_is_a_one_line_error(
    tmp_path, monkeypatch, capsys
):
    from synthetic import build_tiny_model

    model = build_tiny_model(tmp_path / "bare")  # records no training data
    data = write_dataset(tmp_path / "chest_xray", {"train": (2, 2)})
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", str(model), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "validation split: the model lists no validation films" in err
