"""`pneumo predict` against bad, odd and hostile inputs (issue 10): every named input gets one
row, nothing hangs or crashes, names that are not UTF-8 are written safely, DICOM is found by
content, special files are refused without being read."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import CASES, dicom, write_case
from pneumo.cli import main
from pneumo.inference.predict import INPUT_SUFFIXES, printable

SRC = Path(__file__).resolve().parents[2] / "src"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _predict(*args: str) -> int:
    return main(["predict", *args, "--no-progress"])


def test_undecodable_file_name_is_written_to_csv_and_json(tiny_model, xray_files, tmp_path):
    # Linux file names are bytes: b"bad_utf8_\xff\xfe.jpeg" reaches Python with surrogates
    odd = tmp_path / os.fsdecode(b"bad_utf8_\xff\xfe.jpeg")
    odd.write_bytes(xray_files[0].read_bytes())
    for suffix in ("csv", "json"):
        out = tmp_path / f"out.{suffix}"
        assert (
            _predict(str(odd), str(xray_files[1]), "--model", str(tiny_model), "-o", str(out)) == 0
        )
        rows = _read_csv(out) if suffix == "csv" else json.loads(out.read_text("utf-8"))
        assert len(rows) == 2 and not any(r["error"] for r in rows)
        assert rows[0]["path"].endswith("bad_utf8_\\xff\\xfe.jpeg")  # shown, not lost


def test_special_files_are_refused_without_reading_or_hanging(tiny_model, tmp_path):
    """A FIFO named *.jpeg used to hang forever and a link to /dev/zero was read without end."""
    fifo = tmp_path / "pipe.jpeg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpeg"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "inner.png")
    out = tmp_path / "out.csv"
    code = "import sys; from pneumo.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            str(fifo),
            str(zero),
            str(folder),
            "--model",
            str(tiny_model),
            "-o",
            str(out),
            "--no-progress",
        ],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # nothing classified, every reason written
    rows = {Path(r["path"]).name: r["error"] for r in _read_csv(out)}
    assert set(rows) == {"pipe.jpeg", "zero.jpeg", "inner.png"}
    assert "FIFO" in rows["pipe.jpeg"] and "not a regular file" in rows["inner.png"]
    assert "character device" in rows["zero.jpeg"]
    assert "Traceback" not in proc.stderr


def test_file_size_is_capped_before_reading(tmp_path):
    from pneumo.data.decode import read_bytes
    from pneumo.errors import ImageDecodeError

    big = tmp_path / "big.jpeg"
    with open(big, "wb") as f:
        f.truncate(2 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(ImageDecodeError, match="file too large"):
        read_bytes(big, str(big), max_bytes=1024 * 1024)


def test_empty_folder_and_extensionless_dicom_folder_get_rows(tiny_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pacs = tmp_path / "pacs"
    pacs.mkdir()
    for i in range(2):
        (pacs / f"IM00000{i}").write_bytes(dicom(size=80 + i))
    (pacs / "DICOMDIR.txt").write_text("not an image")
    out = tmp_path / "out.csv"
    assert _predict(str(empty), str(pacs), "--model", str(tiny_model), "-o", str(out)) == 0
    rows = _read_csv(out)
    assert [Path(r["path"]).name for r in rows] == ["empty", "IM000000", "IM000001"]
    assert "no images found" in rows[0]["error"]
    assert all(r["class"] in ("NORMAL", "PNEUMONIA") for r in rows[1:])


def test_control_characters_in_names_stay_on_one_line(tiny_model, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_bytes(b'path\nx\x00.jpeg\n"y\x1b[31m\nz.jpeg"\n')
    out = tmp_path / "out.csv"
    assert _predict(str(listing), "--model", str(tiny_model), "-o", str(out)) == 1
    text = out.read_text("utf-8")
    assert "\x00" not in text and "\x1b" not in text and len(text.splitlines()) == 3
    rows = _read_csv(out)
    assert rows[0]["path"].endswith("x\\x00.jpeg") and "invalid file name" in rows[0]["error"]
    assert rows[1]["path"].endswith("y\\x1b[31m\\x0az.jpeg") and "not found" in rows[1]["error"]


def test_colour_noise_and_slivers_are_flagged_not_diagnosed(onnx_predictor, tmp_path):
    """A colour-noise JPEG was called PNEUMONIA at p 0.999 and a 16x4000 image was diagnosed."""
    picked = {c.kind: c for c in CASES if c.kind in ("colour-noise", "colour-photo", "sliver")}
    paths = [write_case(c, tmp_path) for c in picked.values()]
    preds = onnx_predictor.predict_sources(paths)
    assert all(p.error is None and p.ood for p in preds), preds


def test_whole_corpus_through_the_cli(tiny_model, tmp_path):
    """Every case named on the command line: one row each, the expected outcome, no crash."""
    from pneumo.inference.export import ensure_onnx

    ensure_onnx(tiny_model)
    paths = {}
    for i, case in enumerate(CASES):
        paths[case.kind] = write_case(case, tmp_path / f"c{i:02d}")
    out = tmp_path / "out.json"
    code = _predict(*map(str, paths.values()), "--model", str(tiny_model), "-o", str(out))
    assert code == 0
    rows = json.loads(out.read_text("utf-8"))
    assert len(rows) == len(CASES)
    for case, row in zip(CASES, rows, strict=True):
        assert row["path"] == printable(str(paths[case.kind])), case.kind
        error = row["error"]
        if case.expect == "error":
            assert error and "\n" not in error and "Traceback" not in error, case.kind
        elif case.expect == "ok":
            assert error is None and row["class"] in ("NORMAL", "PNEUMONIA"), (case.kind, error)
        elif case.expect == "ood":
            assert error is None and row["ood"] is True, (case.kind, row)
        else:
            assert bool(error) != bool(row["class"]), case.kind


def test_whole_corpus_as_one_folder(tiny_model, tmp_path):
    """Files found in a folder by name or by content; special files get an error row."""
    folder = tmp_path / "corpus"
    for case in CASES:
        write_case(case, folder)
    out = tmp_path / "out.csv"
    assert _predict(str(folder), "--model", str(tiny_model), "-o", str(out)) == 0
    names = {Path(r["path"]).name for r in _read_csv(out)}
    for case in CASES:
        named_like_input = Path(case.filename).suffix.lower() in INPUT_SUFFIXES
        if named_like_input and case.kind != "directory":  # a sub-folder is walked into
            assert printable(case.filename) in names, case.kind
    # found by content: DICOM without or with another suffix, other image formats
    assert {"IM000001", "scan.img", "film.tiff", "film.bmp", "film.webp"} <= names
    assert "film.gif" not in names and "notes.jpeg" in names


def _remove_deep(root: Path) -> None:
    """Bottom-up, without recursion: shutil.rmtree (and pytest's clean-up of old temporary
    folders) recurses once per level on Python 3.11."""
    order, stack = [], [str(root)]
    while stack:
        folder = stack.pop()
        order.append(folder)
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for folder in reversed(order):
        os.rmdir(folder)


def test_very_deep_folders_are_walked(tiny_model, xray_files, tmp_path):
    """Deeper than Python's recursion limit (os.walk recursed on 3.11)."""
    deep = tmp_path / "deep"
    path = deep
    deep.mkdir()
    try:
        for _ in range(1100):
            path = path / "d"
            path.mkdir()  # one level at a time: makedirs itself recurses
        (path / "x.jpeg").write_bytes(xray_files[0].read_bytes())
        out = tmp_path / "out.csv"
        assert _predict(str(deep), "--model", str(tiny_model), "-o", str(out)) == 0
        (row,) = _read_csv(out)
        assert row["path"].endswith("/d/x.jpeg") and not row["error"]
    finally:
        _remove_deep(deep)


def test_unwritable_output_is_one_line_and_early(tiny_model, xray_files, tmp_path, capsys):
    folder_named_csv = tmp_path / "out.csv"
    folder_named_csv.mkdir()
    assert (
        _predict(str(xray_files[0]), "--model", str(tiny_model), "-o", str(folder_named_csv)) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == f"error: {folder_named_csv}: is a folder; give a .csv, .json, .parquet file"
    blocked = tmp_path / "file"
    blocked.write_text("x")
    out = blocked / "out.csv"  # its parent is a file
    assert _predict(str(xray_files[0]), "--model", str(tiny_model), "-o", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {out}: cannot write")
    assert not list(tmp_path.glob("*.tmp"))


def test_huge_csv_list_is_refused_before_reading(tiny_model, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    with open(listing, "wb") as f:
        f.write(b"path\n")
        f.truncate(100 * 1024 * 1024)  # sparse
    assert _predict(str(listing), "--model", str(tiny_model)) == 2
    assert "CSV list too large" in capsys.readouterr().err


def test_empty_csv_list_gets_a_row(tiny_model, xray_files, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path\n")
    out = tmp_path / "out.csv"
    assert (
        _predict(str(listing), str(xray_files[0]), "--model", str(tiny_model), "-o", str(out)) == 0
    )
    rows = _read_csv(out)
    assert [Path(r["path"]).name for r in rows] == ["list.csv", xray_files[0].name]
    assert "has no paths" in rows[0]["error"]
