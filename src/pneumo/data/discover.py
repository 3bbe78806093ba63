"""Find the images of the data set: ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``, with
folder names in any case, and the patient each file belongs to."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES
from pneumo.errors import DataError

SPLITS = ("train", "val", "test")

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL\d+-)?IM-\d+)-\d+", re.IGNORECASE)


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image of the data set."""

    path: Path
    """Absolute path of the file."""
    relpath: str
    """Path relative to the data root, with forward slashes."""
    split: str
    """Split folder it came from (train, val, test) or the split it was assigned to."""
    label: str
    """Class name (NORMAL or PNEUMONIA)."""
    label_index: int
    """0 for NORMAL, 1 for PNEUMONIA."""
    patient: str
    """Patient id parsed from the file name."""


def patient_id(filename: str) -> str:
    """Patient id encoded in a Kermany file name.

    ``person123_bacteria_456.jpeg`` -> ``person123``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
    ``NORMAL2-IM-0587-0001.jpeg`` -> ``NORMAL2-IM-0587``. Unknown patterns fall back to the file
    stem, so such an image is its own patient (never silently merged with another).
    """
    name = Path(filename).name
    if m := _PERSON.match(name):
        return m.group(1).lower()
    if m := _IM.match(name):
        return m.group(1).upper()
    return Path(name).stem


def _child_dirs(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The split folders present under ``root`` (case-insensitive), or a DataError that says
    what layout was expected."""
    root = Path(root)
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist; expected {{train,val,test}}/{{NORMAL,PNEUMONIA}}/ "
            "inside it (set --data or PNEUMO_DATA, or run `pneumo data download`)"
        )
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    children = _child_dirs(root)
    found = {s: children[s] for s in SPLITS if s in children}
    if not found:
        nested = children.get("chest_xray")
        if nested is not None:
            return find_split_dirs(nested)
        raise DataError(
            f"{root} has no train/, val/ or test/ folder; expected "
            f"{root}/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg"
        )
    return found


def find_images(root: Path, splits: Sequence[str] | None = None) -> list[ImageRecord]:
    """All images of the requested splits (default: every split present), sorted by path.

    Missing splits are allowed when ``splits`` is None (the shared copy has no test split);
    a requested split that is missing, or a split without class folders or images, is a
    DataError naming the expected folder. Files are not decoded here.
    """
    root = Path(root)
    dirs = find_split_dirs(root)
    data_root = next(iter(dirs.values())).parent
    wanted = list(splits) if splits is not None else [s for s in SPLITS if s in dirs]
    records: list[ImageRecord] = []
    for split in wanted:
        if split not in dirs:
            raise DataError(f"split {split!r} not found: expected folder {data_root / split}")
        classes = _child_dirs(dirs[split])
        if not any(c.lower() in classes for c in CLASS_NAMES):
            raise DataError(
                f"{dirs[split]} has no NORMAL/ or PNEUMONIA/ folder; expected "
                f"{dirs[split]}/{{NORMAL,PNEUMONIA}}/*.jpeg"
            )
        n_before = len(records)
        for index, label in enumerate(CLASS_NAMES):
            folder = classes.get(label.lower())
            if folder is None:
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    records.append(
                        ImageRecord(
                            path=path.resolve(),
                            relpath=path.relative_to(data_root).as_posix(),
                            split=split,
                            label=label,
                            label_index=index,
                            patient=patient_id(path.name),
                        )
                    )
        if len(records) == n_before:
            raise DataError(f"{dirs[split]} contains no .jpeg, .jpg or .png images")
    return records


def data_root_of(root: Path) -> Path:
    """The folder that holds the split folders (``root`` or its ``chest_xray`` child)."""
    return next(iter(find_split_dirs(Path(root)).values())).parent


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES
    )


def folder_records(folder: Path) -> tuple[list[ImageRecord], bool]:
    """The films of a folder outside the data set's layout, such as a site's own, and whether
    they are labeled (``NORMAL/`` and ``PNEUMONIA/`` subfolders, any case); unlabeled films get
    label index -1."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    subdirs = {p.name.upper(): p for p in folder.iterdir() if p.is_dir()}
    if all(name in subdirs for name in CLASS_NAMES):
        records = [
            ImageRecord(p, str(p.relative_to(folder)), "folder", name, index, patient_id(p.name))
            for index, name in enumerate(CLASS_NAMES)
            for p in _images_in(subdirs[name])
        ]
        return records, True
    if any(name in subdirs for name in CLASS_NAMES):
        raise DataError(
            f"{folder}: a labeled folder needs both NORMAL/ and PNEUMONIA/ subfolders, "
            f"found only {', '.join(n for n in CLASS_NAMES if n in subdirs)}"
        )
    records = [
        ImageRecord(p, str(p.relative_to(folder)), "folder", "UNLABELED", -1, patient_id(p.name))
        for p in _images_in(folder)
    ]
    return records, False
