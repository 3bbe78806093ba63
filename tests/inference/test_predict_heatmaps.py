"""`pneumo predict --heatmaps DIR`: one overlay PNG per diagnosed film, named by its row."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from pneumo.cli import main


def test_predict_writes_an_overlay_per_diagnosed_film(tiny_model, xray_files, tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out, maps = tmp_path / "out.csv", tmp_path / "maps"
    inputs = [*map(str, xray_files[:3]), str(bad), *map(str, xray_files[3:])]
    code = main(
        ["predict", *inputs, "--model", str(tiny_model), "--backend", "onnx", "-o", str(out)]
        + ["--heatmaps", str(maps), "--no-progress"]
    )
    assert code == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    diagnosed = [i for i, r in enumerate(rows, start=1) if r["class"]]
    assert len(diagnosed) == len(xray_files)  # every generated film, not the broken one
    written = sorted(p.name for p in maps.iterdir())
    assert written == [f"{i:06d}-{Path(rows[i - 1]['path']).stem}.png" for i in diagnosed]
    for name, source in zip(written, xray_files, strict=True):
        with Image.open(source) as film, Image.open(maps / name) as shown:
            assert shown.format == "PNG" and shown.mode == "RGB"
            assert shown.size == film.size  # every generated film is within 1024 pixels


def test_heatmaps_are_not_drawn_on_ray(tiny_model, xray_files, tmp_path, capsys):
    code = main(
        ["predict", str(xray_files[0]), "--model", str(tiny_model), "--ray"]
        + ["--heatmaps", str(tmp_path / "maps")]
    )
    assert code != 0 and "--heatmaps runs on this machine" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()


def test_an_unwritable_heatmap_folder_is_named(tiny_model, xray_files, tmp_path, capsys):
    taken = tmp_path / "maps"
    taken.write_text("a file, not a folder")
    code = main(
        ["predict", str(xray_files[0]), "--model", str(tiny_model), "--backend", "onnx"]
        + ["--heatmaps", str(taken), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code != 0 and "cannot write heatmaps there" in err and "maps" in err
