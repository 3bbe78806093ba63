"""The records a run trains and validates on, and a fingerprint of them for the model card."""

from __future__ import annotations

import hashlib
import logging
import random

from pneumo.data.discover import ImageRecord, data_root_of, find_images
from pneumo.data.labels import read_labels
from pneumo.data.split import patient_split
from pneumo.errors import DataError
from pneumo.training.config import TrainConfig

log = logging.getLogger(__name__)


def training_records(cfg: TrainConfig) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, validation) records: label files when given, else a patient-level split of the
    train folder. The official test split is never touched here."""
    root = data_root_of(cfg.data)
    if cfg.train_labels is not None:
        train = read_labels(cfg.train_labels, root)
        if cfg.val_labels is None:
            raise DataError(
                "--train-labels needs --val-labels (validation is never the test split)"
            )
        val = read_labels(cfg.val_labels, root)
    else:
        seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        train, val = patient_split(find_images(root, ["train"]), cfg.val_fraction, seed)
    overlap = {r.patient for r in train} & {r.patient for r in val}
    if overlap:
        raise DataError(
            f"{len(overlap)} patient(s) are in both train and validation, e.g. {sorted(overlap)[:3]}"
        )
    if any(r.split == "test" or r.relpath.lower().startswith("test/") for r in val):
        raise DataError("validation records come from the test split; select on train data only")
    if cfg.max_images is not None and len(train) > cfg.max_images:
        rng = random.Random(cfg.seed)
        train = sorted(rng.sample(train, cfg.max_images), key=lambda r: r.relpath)
    for name, items in (("train", train), ("validation", val)):
        if len({r.label_index for r in items}) < 2:
            raise DataError(f"the {name} records need both classes, got {len(items)} of one class")
    return train, val


def canary_records(data) -> list[ImageRecord]:
    """The official 16-image val split (the canary: reported, never selected on), or none when
    the data root has no val folder."""
    try:
        return find_images(data_root_of(data), ["val"])
    except DataError:
        return []


def fingerprint(records: list[ImageRecord]) -> str:
    """sha256 over each record's relative path, label and file content."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.relpath):
        digest.update(f"{r.relpath}\t{r.label_index}\t".encode())
        digest.update(hashlib.sha256(r.path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()
