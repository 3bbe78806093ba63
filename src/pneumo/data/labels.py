"""Label files: one CSV per split with the image path (relative to the data root), the label
name, the label index and the patient id."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.data.check import BadFile, check_records
from pneumo.data.discover import ImageRecord, find_images
from pneumo.data.split import patient_split
from pneumo.errors import DataError

COLUMNS = ("path", "label", "label_index", "patient")


def write_label_file(records: list[ImageRecord], path: Path) -> Path:
    """Write ``records`` as a label CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow((r.relpath, r.label, r.label_index, r.patient))
    return path


def read_labels(csv_path: Path, root: Path, *, check_files: bool = True) -> list[ImageRecord]:
    """Read a label CSV; paths are resolved against the data ``root``.

    Rows naming missing files are a DataError listing the first few, so a stale labels file
    never trains silently on fewer images.
    """
    csv_path, root = Path(csv_path), Path(root)
    if not csv_path.is_file():
        raise DataError(f"labels file {csv_path} not found (create it with `pneumo data labels`)")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
            raise DataError(f"{csv_path}: expected columns {', '.join(COLUMNS)}")
        rows = list(reader)
    split = csv_path.stem
    records, missing = [], []
    for i, row in enumerate(rows, start=2):
        label = (row["label"] or "").upper()
        index = (row["label_index"] or "").strip()
        if label not in CLASS_NAMES or index != str(CLASS_NAMES.index(label)):
            raise DataError(f"{csv_path}:{i}: bad label {row['label']!r}/{row['label_index']!r}")
        path = (root / row["path"]).resolve()
        if check_files and not path.is_file():
            missing.append(row["path"])
            continue
        records.append(
            ImageRecord(path, row["path"], split, label, CLASS_NAMES.index(label), row["patient"])
        )
    if missing:
        raise DataError(
            f"{csv_path}: {len(missing)} listed image(s) not found under {root}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    return records


@dataclass(frozen=True)
class LabelReport:
    """What ``write_labels`` wrote."""

    files: dict[str, Path]
    """Label CSV per split name."""
    counts: dict[str, dict[str, int]]
    """Images per class in each written split."""
    skipped: list[BadFile] = field(default_factory=list)
    """Unreadable files left out of every label file, with the reason."""


def write_labels(
    data: Path,
    output: Path,
    *,
    val_fraction: float | None = None,
    seed: int = 0,
    check: bool = True,
) -> LabelReport:
    """Write one label CSV per split, optionally carving val out of train by patient.

    Files: train.csv, val.csv, test.csv in the output folder, with the columns path (relative
    to the data root), label, label_index (NORMAL 0, PNEUMONIA 1) and patient. With a
    validation fraction the official train split is divided by patient into train.csv and
    val.csv, stratified by class and reproducible with the seed; no patient is in both. The
    official 16-image val split is then written as val_official.csv. Unreadable files
    are reported with their reason and left out.
    """
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    records = find_images(data)
    skipped: list[BadFile] = []
    if check:
        good, skipped = check_records(records)
        records = [r for r, _ in good]
    by_split: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    if val_fraction:
        if "train" not in by_split:
            raise DataError(f"{data}: no train split to carve a validation split from")
        if "val" in by_split:
            by_split["val_official"] = by_split.pop("val")
        by_split["train"], by_split["val"] = patient_split(by_split["train"], val_fraction, seed)
    files, counts = {}, {}
    for split, items in sorted(by_split.items()):
        files[split] = write_label_file(items, Path(output) / f"{split}.csv")
        counts[split] = {c: sum(r.label == c for r in items) for c in CLASS_NAMES}
    return LabelReport(files, counts, skipped)


def make_label_files(
    data: Path, output: Path, *, val_fraction: float | None = None, seed: int = 0
) -> dict[str, Path]:
    """``write_labels`` returning only the label file per split."""
    return write_labels(data, output, val_fraction=val_fraction, seed=seed).files
