"""`pneumo data show`: a PNG grid of N images per class, the same files for the same seed, and a
broken pick replaced by the next one."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import add_bad_file
from PIL import Image

from pneumo.data.show import pick_images, show_images


def test_grid_png_with_n_images_per_class(cli, tiny_data, tmp_path):
    out = tmp_path / "figs" / "grid.png"
    code, stdout, _ = cli("data", "show", "--data", tiny_data, "--per-class", "3", "-o", out)
    assert code == 0 and f"wrote {out}" in stdout
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (660, 500)  # 2.2 x 2.5 inches per tile at 100 dpi, 3 x 2 tiles
        assert len(np.unique(np.asarray(img.convert("L")))) > 50  # X-rays, not a blank canvas
    normal = next(line for line in stdout.splitlines() if line.startswith("NORMAL: "))
    assert len(normal.split(", ")) == 3 and all(n.endswith(".jpeg") for n in normal.split(", "))


def test_same_seed_same_files(tiny_data, tmp_path):
    a = show_images(tiny_data, tmp_path / "a.png", per_class=4, seed=7)
    b = show_images(tiny_data, tmp_path / "b.png", per_class=4, seed=7)
    c = show_images(tiny_data, tmp_path / "c.png", per_class=4, seed=8)
    assert a.shown == b.shown
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert a.shown != c.shown
    assert [len(v) for v in a.shown.values()] == [4, 4]
    assert {r.label for r in a.shown["PNEUMONIA"]} == {"PNEUMONIA"}
    assert {r.split for rs in a.shown.values() for r in rs} == {"train"}


def test_broken_pick_is_reported_and_replaced(tiny_data, tmp_path, caplog):
    bad = add_bad_file(tiny_data, "truncated")
    # the seed whose first NORMAL pick is the broken file
    from pneumo.data.discover import find_images

    records = find_images(tiny_data, splits=["train"])
    seed = next(s for s in range(500) if pick_images(records, s)["NORMAL"][0].path == bad)
    result = show_images(tiny_data, tmp_path / "g.png", per_class=2, seed=seed)
    assert [b.path for b in result.skipped] == [f"train/NORMAL/{bad.name}"]
    assert "truncated" in result.skipped[0].reason
    assert len(result.shown["NORMAL"]) == 2 and bad not in [r.path for r in result.shown["NORMAL"]]
    assert any(bad.name in r.message for r in caplog.records)


def test_per_class_out_of_range_is_a_user_error(cli, tiny_data, tmp_path):
    code, _, err = cli(
        "data", "show", "--data", tiny_data, "--per-class", "0", "-o", tmp_path / "g.png"
    )
    assert code == 2 and "--per-class must be between 1 and 20" in err


@pytest.mark.realdata
def test_show_on_shared_data(cli, real_data_root, tmp_path):
    out = tmp_path / "grid.png"
    code, stdout, _ = cli("data", "show", "--data", real_data_root, "--per-class", "4", "-o", out)
    assert code == 0 and out.stat().st_size > 50_000
    lines = stdout.splitlines()
    assert any(line.startswith("PNEUMONIA: person") for line in lines)
    assert any(line.startswith("NORMAL: ") and "IM-" in line for line in lines)
