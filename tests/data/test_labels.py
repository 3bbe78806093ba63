"""`pneumo data labels`: one CSV per split, patient ids from file names, a validation split
carved out by patient (stratified, reproducible), and unreadable files left out."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
from data_helpers import BAD_FILES, add_bad_file

from pneumo.data.discover import patient_id
from pneumo.data.labels import read_labels


def rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person123_bacteria_456.jpeg", "person123"),
        ("person123_virus_789.jpeg", "person123"),
        ("person1_virus_11_1.jpeg", "person1"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0117-0001-0002.jpeg", "IM-0117"),
        ("NORMAL2-IM-0587-0001.jpeg", "NORMAL2-IM-0587"),
        ("NORMAL2-IM-0587-0001-0001.jpeg", "NORMAL2-IM-0587"),
        ("scan.png", "scan"),  # unknown pattern: its own patient, never merged
    ],
)
def test_patient_id_from_kermany_names(name, patient):
    assert patient_id(name) == patient


def test_label_files_have_paths_labels_indices_and_patients(cli, tiny_data, tmp_path):
    out = tmp_path / "labels"
    code, stdout, _ = cli("data", "labels", "--data", tiny_data, "--output", out)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv", "val.csv"]
    train = rows(out / "train.csv")
    assert len(train) == 48
    first = train[0]
    assert list(first) == ["path", "label", "label_index", "patient"]
    assert first["path"].startswith("train/NORMAL/") and first["label"] == "NORMAL"
    assert first["label_index"] == "0" and first["patient"] == patient_id(first["path"])
    assert Counter((r["label"], r["label_index"]) for r in train) == {
        ("NORMAL", "0"): 24,
        ("PNEUMONIA", "1"): 24,
    }
    # the printed table gives the counts per class per split
    lines = [" ".join(line.replace("│", " ").split()) for line in stdout.splitlines()]
    assert any(line.startswith("train ") and line.endswith(" 24 24 48") for line in lines)
    # and the files read back into records that point at the images
    records = read_labels(out / "val.csv", tiny_data)
    assert len(records) == 8 and all(r.path.is_file() for r in records)


def test_val_fraction_carves_val_by_patient(cli, tiny_data, tmp_path):
    out = tmp_path / "labels"
    code, _, _ = cli("data", "labels", "--data", tiny_data, "-o", out, "--val-fraction", "0.25")
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["test.csv", "train.csv", "val.csv", "val_official.csv"]
    train, val = rows(out / "train.csv"), rows(out / "val.csv")
    assert len(train) + len(val) == 48
    assert Counter(r["label"] for r in val) == {"NORMAL": 6, "PNEUMONIA": 6}
    assert not {r["patient"] for r in train} & {r["patient"] for r in val}
    assert len(rows(out / "val_official.csv")) == 8


def test_bad_val_fraction_is_a_user_error(cli, tiny_data, tmp_path):
    code, _, err = cli(
        "data", "labels", "--data", tiny_data, "-o", tmp_path, "--val-fraction", "1.5"
    )
    assert code == 2 and "--val-fraction must be between 0 and 1" in err


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unreadable_files_are_left_out_of_the_labels(cli, tiny_data, tmp_path, caplog, kind):
    bad = add_bad_file(tiny_data, kind)
    code, _, err = cli("data", "labels", "--data", tiny_data, "-o", tmp_path / "labels")
    assert code == 0
    paths = [r["path"] for r in rows(tmp_path / "labels" / "train.csv")]
    assert len(paths) == 48 and f"train/NORMAL/{bad.name}" not in paths
    assert any(bad.name in r.message and BAD_FILES[kind][1] in r.message for r in caplog.records)
    assert "1 unreadable file(s) skipped" in err


def test_stale_label_file_is_a_clear_error(tiny_data, tmp_path):
    from pneumo.data.labels import make_label_files
    from pneumo.errors import DataError

    files = make_label_files(tiny_data, tmp_path)
    removed = sorted((tiny_data / "test" / "NORMAL").iterdir())[0]
    removed.unlink()
    with pytest.raises(DataError, match=f"1 listed image.*not found.*{removed.name}"):
        read_labels(files["test"], tiny_data)


@pytest.mark.realdata
def test_patient_split_on_shared_data(real_data_root, tmp_path):
    from pneumo.data.labels import write_labels

    a = write_labels(real_data_root, tmp_path / "a", val_fraction=0.15, seed=0)
    assert a.skipped == []
    train, val = rows(a.files["train"]), rows(a.files["val"])
    official = rows(a.files["val_official"])
    assert len(train) + len(val) == 5216 and len(official) == 16

    # no patient in two splits (person123's bacteria and virus films stay together)
    patients = [{r["patient"] for r in part} for part in (train, val, official)]
    assert not patients[0] & patients[1]
    assert not patients[0] & patients[2] and not patients[1] & patients[2]
    assert all(r["patient"] == patient_id(r["path"]) for r in train + val)

    # about 15% of the images, stratified: class shares within 2 points of the whole train split
    assert 0.14 <= len(val) / 5216 <= 0.16
    share = Counter(r["label"] for r in val)["PNEUMONIA"] / len(val)
    assert abs(share - 3875 / 5216) < 0.02

    # reproducible: the same seed writes the same files, another seed another split
    b = write_labels(real_data_root, tmp_path / "b", val_fraction=0.15, seed=0)
    c = write_labels(real_data_root, tmp_path / "c", val_fraction=0.15, seed=1)
    assert b.files["val"].read_bytes() == a.files["val"].read_bytes()
    assert b.files["train"].read_bytes() == a.files["train"].read_bytes()
    val_c = {r["path"] for r in rows(c.files["val"])}
    assert val_c != {r["path"] for r in val}
    assert not {r["patient"] for r in rows(c.files["train"])} & {
        r["patient"] for r in rows(c.files["val"])
    }
