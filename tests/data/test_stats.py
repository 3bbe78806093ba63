"""`pneumo data stats`: the seed's count table, sizes and modes, all output formats, and
unreadable files reported and left out of the counts."""

from __future__ import annotations

import csv
import io
import json

import pytest
from data_helpers import BAD_FILES, add_bad_file

from pneumo.data.stats import dataset_stats


@pytest.mark.realdata
def test_stats_on_shared_data_shows_the_official_counts(cli, real_data_root):
    code, out, _ = cli("data", "stats", "--data", real_data_root)
    assert code == 0
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "train PNEUMONIA 3875 74.29%" in lines
    assert "train NORMAL 1341 25.71%" in lines
    assert "val NORMAL 8 50.00%" in lines
    assert "val PNEUMONIA 8 50.00%" in lines
    assert "all total 5232" in lines
    assert "width 224-224 (median 224)" in out  # the shared copy is squashed to 224x224
    assert "modes: RGB 5232" in out
    assert "unreadable files (not counted): 0" in out


def test_table_counts_and_percentages_on_generated_data(cli, tiny_data):
    code, out, _ = cli("data", "stats", "--data", tiny_data)
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert code == 0
    for split, n in (("train", 24), ("val", 4), ("test", 6)):
        assert f"{split} NORMAL {n} 50.00%" in lines
        assert f"{split} total {2 * n} 100.00%" in lines
    assert "width 64-64 (median 64), height 64-64 (median 64)" in out


def test_percentages_are_within_each_split(tmp_path, tiny_data):
    for path in sorted((tiny_data / "train" / "NORMAL").iterdir())[:16]:
        path.unlink()  # train: 8 NORMAL, 24 PNEUMONIA
    stats = dataset_stats(tiny_data)
    share = {(c.split, c.label): (c.count, c.percent) for c in stats.counts}
    assert share[("train", "NORMAL")] == (8, 25.0)
    assert share[("train", "PNEUMONIA")] == (24, 75.0)
    assert share[("val", "NORMAL")] == (4, 50.0)
    assert stats.split_totals == {"train": 32, "val": 8, "test": 12}


def test_csv_json_and_markdown_outputs(cli, tiny_data, tmp_path):
    code, out, _ = cli("data", "stats", "--data", tiny_data, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0] == {"split": "train", "label": "NORMAL", "count": "24", "percent": "50.00"}
    assert {"split": "all", "label": "total", "count": "68", "percent": ""} in rows

    target = tmp_path / "out" / "stats.json"
    code, out, _ = cli("data", "stats", "--data", tiny_data, "--format", "json", "-o", target)
    assert code == 0 and "wrote" in out
    data = json.loads(target.read_text())
    assert data["total"] == 68
    assert data["sizes"]["width_median"] == 64
    assert data["modes"] == {"RGB": 68}
    assert data["unreadable"] == []

    # table on screen and Markdown in the file, chosen from the suffix
    md = tmp_path / "stats.md"
    code, out, _ = cli("data", "stats", "--data", tiny_data, "--output", md)
    assert code == 0 and "train" in out
    assert "| train | PNEUMONIA | 24 | 50.00% |" in md.read_text()


def test_output_with_unknown_suffix_is_a_clear_error(cli, tiny_data, tmp_path):
    code, _, err = cli("data", "stats", "--data", tiny_data, "--output", tmp_path / "stats.xls")
    assert code == 2
    assert "stats.xls" in err and "--format" in err


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unreadable_file_is_reported_and_not_counted(cli, tiny_data, caplog, kind):
    bad = add_bad_file(tiny_data, kind)
    code, out, err = cli("data", "stats", "--data", tiny_data, "--format", "json")
    assert code == 0
    data = json.loads(out)
    reason = BAD_FILES[kind][1]
    assert data["unreadable"] == [
        {
            "path": f"train/NORMAL/{bad.name}",
            "split": "train",
            "label": "NORMAL",
            "reason": data["unreadable"][0]["reason"],
        }
    ]
    assert reason in data["unreadable"][0]["reason"]
    assert data["split_totals"]["train"] == 48  # the 48 good ones are all still counted
    assert any(bad.name in r.message and reason in r.message for r in caplog.records)
    assert "1 unreadable file(s) skipped" in err


def test_image_sizes_and_modes_are_summarised(tiny_data):
    from PIL import Image

    Image.new("L", (300, 500), 128).save(tiny_data / "test" / "NORMAL" / "IM-0999-0001.png")
    stats = dataset_stats(tiny_data)
    assert stats.sizes.width_max == 300 and stats.sizes.height_max == 500
    assert stats.sizes.width_min == 64 and stats.sizes.width_median == 64
    assert stats.modes == {"RGB": 68, "L": 1}
    assert stats.formats == {"JPEG": 68, "PNG": 1}
