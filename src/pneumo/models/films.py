"""The films a model was made with, listed in its directory (``films.json``): its validation
films, which the accuracy guard judges reduced precision on, and the training films int8 is
calibrated on. Written when the model is trained or bundled (``pneumo.training``), read by
serving, which so never rebuilds a training split: paths are relative to the data root, so the
list travels with the model and the films are found wherever the data set lies."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.data.discover import ImageRecord, patient_id
from pneumo.errors import PneumoError
from pneumo.files import write_atomic
from pneumo.models.checkpoint import FILMS_FILE

FORMAT = "pneumo-films/1"
CALIBRATION_IMAGES = 300
"""Training films int8 is calibrated on (never validation: the guard must judge unseen films)."""


@dataclass(frozen=True)
class ModelFilms:
    """The films of one model, found under ``root``."""

    validation: list[ImageRecord]
    calibration: list[ImageRecord]
    split: str
    """How the validation films were chosen, in words."""
    root: Path


def calibration_sample(train: list[ImageRecord], n: int = CALIBRATION_IMAGES) -> list:
    """``n`` training films spread over the split (the same ones every time)."""
    if len(train) <= n:
        return sorted(train, key=lambda r: r.relpath)
    return sorted(random.Random(0).sample(train, n), key=lambda r: r.relpath)


def write_films(
    model_dir: str | Path,
    *,
    data: str | Path,
    validation: list[ImageRecord],
    train: list[ImageRecord],
    split: str,
) -> Path:
    """Write ``films.json`` into ``model_dir``: the validation films and a calibration sample of
    ``train``, by path relative to the data root and label. ``data`` is kept as given (a
    relative path is looked up from the working directory and from the model's repository)."""
    path = Path(model_dir) / FILMS_FILE
    head = {"format": FORMAT, "data": str(data), "split": split}
    lists = {
        "validation": [[r.relpath, r.label] for r in validation],
        "calibration": [[r.relpath, r.label] for r in calibration_sample(train)],
    }
    # one film a line: readable, and a changed split shows as a short diff
    parts = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    for key, rows in lists.items():
        body = ",\n".join(f"  {json.dumps(row)}" for row in rows)
        parts.append(f" {json.dumps(key)}: [\n{body}\n ]")
    write_atomic(path, "{\n" + ",\n".join(parts) + "\n}\n")
    return path


def _records(rows, root: Path, split: str) -> list[ImageRecord]:
    records = []
    for relpath, label in rows:
        if label not in CLASS_NAMES:
            raise ValueError(f"unknown label {label!r} for {relpath}")
        records.append(
            ImageRecord(
                path=root / relpath,
                relpath=relpath,
                split=split,
                label=label,
                label_index=CLASS_NAMES.index(label),
                patient=patient_id(relpath),
            )
        )
    return records


def _candidate_roots(model_dir: Path, recorded: str, data: str | Path | None) -> list[Path]:
    """Where the data set may lie: ``data``, $PNEUMO_DATA, the recorded root as written, and a
    relative recorded root from the repository holding ``model_dir`` (``models/<name>``: where
    ``make bundled-model`` ran)."""
    roots = [data, os.environ.get("PNEUMO_DATA"), recorded]
    if recorded and not Path(recorded).is_absolute():
        roots.append(model_dir.resolve().parents[1] / recorded)
    return [Path(r) for r in roots if r]


def read_films(model_dir: str | Path, data: str | Path | None = None) -> ModelFilms:
    """The model's films under ``data``, else $PNEUMO_DATA, else the data root it records.
    Raises PneumoError when the model lists none, or no root holds every listed film."""
    model_dir = Path(model_dir)
    path = model_dir / FILMS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PneumoError(
            f"the model lists no validation films ({FILMS_FILE}; `pneumo bundle` and "
            "`pneumo train` write it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PneumoError(f"{path}: unreadable ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PneumoError(f"{path}: not a {FORMAT} list of films")
    try:
        problems = []
        for root in _candidate_roots(model_dir, doc.get("data") or "", data):
            if not root.is_dir():
                continue
            validation = _records(doc["validation"], root, "val")
            calibration = _records(doc.get("calibration", []), root, "train")
            missing = [r for r in validation + calibration if not r.path.is_file()]
            if missing:
                problems.append(f"{root}: {len(missing)} listed films missing")
                continue
            if not validation:
                raise PneumoError(f"{path}: lists no validation films")
            return ModelFilms(validation, calibration, str(doc.get("split", "validation")), root)
    except (KeyError, TypeError, ValueError) as exc:
        raise PneumoError(f"{path}: malformed ({exc})") from None
    found = f" ({'; '.join(problems)})" if problems else ""
    raise PneumoError(
        f"its validation films were not found{found}; set PNEUMO_DATA to the data set the "
        "model was trained on"
    )
