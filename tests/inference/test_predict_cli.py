"""`pneumo predict`: inputs from files, folders and CSV lists; CSV/JSON out (the Ray path:
test_ray_predict.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pneumo.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def folder(xray_files, tmp_path) -> Path:
    """A folder tree with images, a DICOM-less sub-folder and a non-image file to skip."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for i, p in enumerate(xray_files[:4]):
        (root / ("sub" if i % 2 else ".") / p.name).write_bytes(p.read_bytes())
    (root / "readme.txt").write_text("skip me")
    (root / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_predict_folder_to_csv_keeps_going_past_bad_files(tiny_model, folder, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code = main(
        [
            "predict",
            str(folder),
            str(tmp_path / "nope.jpeg"),
            "--model",
            str(tiny_model),
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    rows = _read_csv(out)
    assert list(rows[0]) == [
        "path",
        "class",
        "probability",
        "confidence",
        "uncertain",
        "ood",
        "ood_score",
        "ood_reason",
        "error",
    ]
    assert len(rows) == 6  # 4 images + broken.jpeg + the missing file; readme.txt skipped
    bad = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(bad) == {"broken.jpeg", "nope.jpeg"}
    assert "file not found" in bad["nope.jpeg"]
    good = [r for r in rows if not r["error"]]
    assert all(
        r["class"] in ("NORMAL", "PNEUMONIA") and 0 <= float(r["probability"]) <= 1 for r in good
    )
    err = capsys.readouterr().err
    assert "4 of 6 images classified" in err and "2 could not be read" in err


def test_predict_csv_list_to_json(tiny_model, xray_files, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("patient,path\na," + xray_files[0].name + "\nb," + str(xray_files[1]) + "\n")
    for p in xray_files[:1]:  # the relative path is relative to the list's folder
        assert (listing.parent / p.name).is_file()
    out = tmp_path / "out.json"
    assert (
        main(
            [
                "predict",
                str(listing),
                "--model",
                str(tiny_model),
                "-o",
                str(out),
                "--backend",
                "torch",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [Path(r["path"]).name for r in rows] == [xray_files[0].name, xray_files[1].name]
    assert all(r["error"] is None and isinstance(r["probability"], float) for r in rows)
    assert all(isinstance(r["ood"], bool) for r in rows)


def test_csv_without_path_column_is_a_clear_error(tiny_model, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text("file\nx.jpeg\n")
    assert main(["predict", str(listing), "--model", str(tiny_model), "--no-progress"]) == 2
    assert "needs a 'path' column" in capsys.readouterr().err


def test_nothing_readable_exits_non_zero(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.jpeg"
    bad.write_text("nope")
    out = tmp_path / "out.csv"
    assert (
        main(["predict", str(bad), "--model", str(tiny_model), "-o", str(out), "--no-progress"])
        == 1
    )
    assert _read_csv(out)[0]["error"]  # the reason is still written


def test_precision_can_be_forced_and_a_backend_without_it_says_so(
    tiny_model, folder, tmp_path, capsys, caplog
):
    import logging

    from pneumo.cli import main

    caplog.set_level(logging.INFO, logger="pneumo.inference.engine")
    out = tmp_path / "bf16.csv"
    args = ["predict", str(folder), "--model", str(tiny_model), "--no-progress", "-o"]
    code = main([*args, str(out), "--backend", "onnx", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code != 0 and "ONNX Runtime runs fp32" in err and "Traceback" not in err
    assert not out.exists()
    pytest.importorskip("openvino")
    assert main([*args, str(out), "--backend", "openvino", "--precision", "bf16"]) == 0
    assert "openvino, bf16" in caplog.text  # the log line of the loaded engine
    assert len(out.read_text().splitlines()) > 1
