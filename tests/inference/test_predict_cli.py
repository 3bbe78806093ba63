"""`pneumo predict`: inputs from files, folders and CSV lists; CSV/JSON out; sharding."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
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


def test_two_processes_shard_and_rank0_merges(tiny_model, xray_files, folder, tmp_path):
    from pneumo.inference.export import ensure_onnx

    ensure_onnx(tiny_model)  # export once, as a warm cache would be
    single = tmp_path / "single.csv"
    assert (
        main(
            ["predict", str(folder), "--model", str(tiny_model), "-o", str(single), "--no-progress"]
        )
        == 0
    )
    out = tmp_path / "sharded.csv"
    code = (
        "import sys; from pneumo.cli import main; "
        f"sys.exit(main(['predict', {str(folder)!r}, '--model', {str(tiny_model)!r}, "
        f"'-o', {str(out)!r}, '--no-progress']))"
    )
    procs = []
    for rank in (1, 0):  # rank 0 must wait for rank 1's part before merging
        env = dict(
            os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", PYTHONPATH=str(SRC)
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    part0, part1 = (
        _read_csv(tmp_path / "sharded.rank0.csv"),
        _read_csv(tmp_path / "sharded.rank1.csv"),
    )
    assert len(part0) == 3 and len(part1) == 2  # every 2nd of 5 inputs
    merged, expected = _read_csv(out), _read_csv(single)
    assert [r["path"] for r in merged] == [r["path"] for r in expected]
    for a, b in zip(merged, expected, strict=True):
        assert a["class"] == b["class"] and a["error"] == b["error"]
        if a["probability"]:
            assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-4)


def test_shard_flag_and_explicit_merge(tiny_model, folder, tmp_path, capsys):
    out = tmp_path / "o.json"
    base = ["predict", str(folder), "--model", str(tiny_model), "-o", str(out), "--no-progress"]
    assert main([*base, "--shard", "1/2"]) == 0
    assert not out.exists()  # rank 1 never merges
    assert main(["predict", "--merge", "-o", str(out)]) == 2  # part 0 missing: says so
    assert "part 0 of 2 is missing" in capsys.readouterr().err
    assert main([*base, "--shard", "0/2"]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 5 and rows == sorted(rows, key=lambda r: r["path"])
    out.unlink()
    assert main(["predict", "--merge", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == rows
    assert main([*base, "--shard", "2/2"]) == 2
    assert "invalid shard 2/2" in capsys.readouterr().err


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
