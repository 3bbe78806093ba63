"""The seed's model comparison done right: train each backbone with the same settings, rank on
the patient-level validation split by ROC-AUC then balanced accuracy (never plain accuracy:
always-pneumonia scores 74%), write a side-by-side report, retrain the winner on train +
validation with the chosen number of epochs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)


def compare(base, backbones: list[str], *, output: Path, retrain: bool = True) -> dict:
    """Train every backbone in ``backbones`` with the settings of ``base`` (a TrainConfig),
    rank them on validation, write ``comparison.md``/``comparison.json`` and retrain the winner
    on the complete training data."""
    raise NotImplementedError
