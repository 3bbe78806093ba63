"""Finding the data: the expected layout in any case, nested chest_xray/, missing splits, and one
clear error (exit code 2, `error: ...` naming what was expected) for each wrong layout."""

from __future__ import annotations

import shutil

import pytest

from pneumo.data.discover import find_images


@pytest.mark.parametrize(
    "command", [["stats"], ["labels", "-o", "labels"], ["show", "-o", "g.png"]]
)
def test_missing_folder_says_where_to_get_data(cli, tmp_path, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("data", *command, "--data", tmp_path / "nowhere")
    assert code == 2
    assert err.startswith("error: ")
    assert "nowhere does not exist" in err
    assert "{train,val,test}/{NORMAL,PNEUMONIA}/" in err and "pneumo data download" in err
    assert not (tmp_path / "labels").exists() and not (tmp_path / "g.png").exists()


def test_default_data_dir_comes_from_the_environment(cli, tiny_data, monkeypatch):
    monkeypatch.setenv("PNEUMO_DATA", str(tiny_data))
    code, out, _ = cli("data", "stats", "--format", "csv")
    assert code == 0 and "train,PNEUMONIA,24,50.00" in out


def test_empty_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("data", "stats", "--data", tmp_path / "empty")
    assert code == 2
    assert "has no train/, val/ or test/ folder" in err
    assert "{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg" in err


def test_images_without_split_folders(cli, tmp_path, tiny_data):
    flat = tmp_path / "flat"
    shutil.copytree(tiny_data / "train" / "NORMAL", flat)
    code, _, err = cli("data", "labels", "--data", flat, "-o", tmp_path / "labels")
    assert code == 2 and f"{flat} has no train/, val/ or test/ folder" in err


def test_split_without_class_folders(cli, tmp_path):
    (tmp_path / "d" / "train" / "cats").mkdir(parents=True)
    code, _, err = cli("data", "stats", "--data", tmp_path / "d")
    assert code == 2
    assert "train has no NORMAL/ or PNEUMONIA/ folder" in err


def test_class_folders_without_images(cli, tmp_path):
    (tmp_path / "d" / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "d" / "train" / "NORMAL" / "notes.txt").write_text("x")
    code, _, err = cli("data", "stats", "--data", tmp_path / "d")
    assert code == 2 and "contains no .jpeg, .jpg or .png images" in err


def test_requested_split_missing(cli, tiny_data, tmp_path):
    shutil.rmtree(tiny_data / "val")
    code, _, err = cli(
        "data", "show", "--data", tiny_data, "--split", "val", "-o", tmp_path / "g.png"
    )
    assert code == 2 and "split 'val' not found" in err


def test_any_case_nested_root_and_missing_test_split(tmp_path, tiny_data):
    shutil.rmtree(tiny_data / "test")  # like the shared copy
    (tiny_data / "train").rename(tiny_data / "TRAIN")
    (tiny_data / "TRAIN" / "NORMAL").rename(tiny_data / "TRAIN" / "normal")
    # pointing at the folder above chest_xray/ works too (how the archive unpacks)
    records = find_images(tiny_data.parent)
    assert {r.split for r in records} == {"train", "val"}
    train_normal = [r for r in records if r.split == "train" and r.label == "NORMAL"]
    assert len(train_normal) == 24
    assert train_normal[0].relpath.startswith("TRAIN/normal/")
    assert all(r.path.is_file() for r in records)
