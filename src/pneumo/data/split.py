"""A validation split carved out of train by patient, stratified by class, reproducible: no
patient's images land on both sides, or the validation figures leak."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

from pneumo.data.discover import ImageRecord


def patient_split(
    records: list[ImageRecord], val_fraction: float, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split ``records`` into (train, val) by patient.

    Patients are grouped by their majority class and, within each class, shuffled with ``seed``
    and taken for validation until that class's image share reaches ``val_fraction``. The
    returned records carry split ``train`` or ``val``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_patient[r.patient].append(r)
    by_class: dict[int, list[str]] = defaultdict(list)
    for patient, items in sorted(by_patient.items()):
        majority = round(sum(r.label_index for r in items) / len(items))
        by_class[majority].append(patient)
    rng = random.Random(seed)
    val_patients: set[str] = set()
    for label in sorted(by_class):
        patients = by_class[label]
        rng.shuffle(patients)
        target = val_fraction * sum(len(by_patient[p]) for p in patients)
        taken = 0
        for p in patients:
            if taken >= target:
                break
            val_patients.add(p)
            taken += len(by_patient[p])
    train = [replace(r, split="train") for r in records if r.patient not in val_patients]
    val = [replace(r, split="val") for r in records if r.patient in val_patients]
    return train, val
