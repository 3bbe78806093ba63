"""`pneumo evaluate` end to end on the generated data set with a tiny saved model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pneumo.cli import main
from pneumo.evaluation.metrics import RATE_METRICS
from pneumo.models.preprocess import DataConfig

pytestmark = pytest.mark.slow

TEMPERATURE = 2.0
THRESHOLD = 0.4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """runs/tiny/{model/, history.json}: a random tiny model at 64x64 with its history."""
    import torch

    from pneumo.models.checkpoint import ModelMetadata, save_model
    from pneumo.models.registry import create_model

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    model = create_model("test_efficientnet", pretrained=False)
    meta = ModelMetadata(
        backbone="test_efficientnet",
        data_config=DataConfig((64, 64), (0.5,) * 3, (0.5,) * 3),
        threshold=THRESHOLD,
        temperature=TEMPERATURE,
    )
    save_model(run / "model", model, meta)
    history = [
        {
            "epoch": e,
            "train_loss": 0.7 / e,
            "train_accuracy": 0.6 + e / 20,
            "val_loss": 0.8 / e,
            "val_accuracy": 0.55 + e / 20,
            "val_roc_auc": 0.7,
            "val_balanced_accuracy": 0.5 + e / 20,
            "lr": 1e-3,
            "seconds": 1.0,
        }
        for e in range(1, 4)
    ]
    (run / "history.json").write_text(json.dumps(history))
    return run


def test_evaluate_writes_complete_report(tiny_data, run_dir, tmp_path, caplog, capsys):
    (tiny_data / "test" / "NORMAL" / "broken.jpeg").write_bytes(b"not an image at all")
    out = tmp_path / "out" / "report.json"
    argv = ["evaluate", "--model", str(run_dir / "model"), "--data", str(tiny_data)]
    code = main([*argv, "--output", str(out), "--batch-size", "5"])
    assert code == 0

    report = json.loads(out.read_text())
    # 6 + 6 readable images; the broken one is skipped, named with its reason, not fatal
    assert (report["n"], report["n_normal"], report["n_pneumonia"]) == (12, 6, 6)
    assert report["skipped"] == [
        {
            "path": "test/NORMAL/broken.jpeg",
            "reason": "not an image (unknown or unsupported format)",
        }
    ]
    assert "broken.jpeg" in caplog.text
    for key in RATE_METRICS:
        assert 0 <= report[key] <= 1, key
        lo, hi = report["ci95"][key]
        assert 0 <= lo <= hi <= 1, key
    assert report["baseline_always_pneumonia"]["accuracy"] == 0.5
    assert report["threshold"] == THRESHOLD and report["split"] == "test"
    assert report["model"]["backbone"] == "test_efficientnet"
    assert report["bootstrap"]["unit"] == "patient"
    assert "Kermany" in report["data"]
    assert sum(map(sum, report["confusion_matrix"])) == 12

    md = out.with_suffix(".md").read_text()
    assert set(report["plots"]) == {"confusion_matrix", "roc", "reliability", "training"}
    for name in report["plots"].values():
        assert (out.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in md

    # the summary table went to stdout
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "always PNEUMONIA" in printed


def test_probabilities_use_the_metadata_preprocessing_and_temperature(tiny_data, run_dir, tmp_path):
    import csv

    import torch

    from pneumo.data.decode import load_image
    from pneumo.models.checkpoint import load_model
    from pneumo.models.preprocess import preprocess

    out = tmp_path / "r.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run_dir / "model"),
                "--data",
                str(tiny_data),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "r_predictions.csv").open()))
    assert len(rows) == 12
    model, meta, _ = load_model(run_dir / "model")
    row = rows[0]
    x = preprocess(load_image(tiny_data / row["path"]), meta.data_config)[None]
    with torch.no_grad():
        logits = model(torch.from_numpy(x))[0].numpy()
    expected = np.exp(logits / TEMPERATURE) / np.exp(logits / TEMPERATURE).sum()
    assert float(row["probability"]) == pytest.approx(expected[1], abs=1e-5)
    assert row["predicted"] == ("PNEUMONIA" if expected[1] >= THRESHOLD else "NORMAL")


def test_labels_csv_and_model_from_environment(tiny_data, run_dir, tmp_path, monkeypatch):
    from pneumo.data.discover import find_images
    from pneumo.data.labels import write_label_file

    records = find_images(tiny_data, ["val"])[1:]  # 7 of the 8 val images
    labels = write_label_file(records, tmp_path / "val_patient.csv")
    monkeypatch.setenv("PNEUMO_MODEL", str(run_dir / "model"))
    out = tmp_path / "val.json"
    argv = ["evaluate", "--data", str(tiny_data), "--labels", str(labels), "--output", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 7 and report["split"] == "val_patient"
    assert report["model"]["path"] == str(run_dir / "model")


def test_missing_split_names_the_folder(tiny_data, run_dir, tmp_path, capsys):
    shutil.rmtree(tiny_data / "test")
    argv = ["evaluate", "--model", str(run_dir / "model"), "--data", str(tiny_data)]
    argv += ["--split", "test"]
    assert main([*argv, "--output", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert str(tiny_data / "test") in err and "not found" in err
    assert not (tmp_path / "r.json").exists()


def test_missing_model_is_a_clear_error(tiny_data, tmp_path, capsys):
    argv = ["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tiny_data)]
    assert main([*argv, "--output", str(tmp_path / "r.json")]) == 2
    assert "no model here" in capsys.readouterr().err


def test_output_must_be_json(tiny_data, run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", str(tiny_data), "--output", str(tmp_path / "r.md")])
    assert exc.value.code == 2
    assert "must end in .json" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_val_split(real_data_root, run_dir, tmp_path):
    # the shared copy's official val split: 8 + 8 real 224x224 JPEGs, squashed to the model's 64
    out = tmp_path / "val.json"
    argv = ["evaluate", "--model", str(run_dir / "model"), "--data", str(real_data_root)]
    assert main([*argv, "--split", "val", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["n"], report["n_normal"], report["n_pneumonia"], report["skipped"]) == (
        16,
        8,
        8,
        [],
    )
    # Kermany file names give fewer patients than images (person1946 has two val films)
    assert report["bootstrap"]["n_units"] == 15
