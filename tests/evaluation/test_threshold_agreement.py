"""A model whose threshold is not 0.5 labels by its own threshold, and a probability exactly
at the threshold gets the same label when served (Predictor.postprocess) as when evaluated
(pneumo.evaluation): PNEUMONIA iff p >= threshold (issue 18)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pneumo.data.discover import ImageRecord
from pneumo.evaluation.evaluate import _prediction_rows
from pneumo.evaluation.metrics import compute_metrics
from pneumo.inference.predictor import Predictor
from pneumo.models.checkpoint import ModelMetadata
from pneumo.models.preprocess import DataConfig


class _FromLogits(Predictor):
    """The serving logic without a network: postprocess is what every backend shares."""

    def forward(self, batch):  # pragma: no cover - logits are given directly
        raise NotImplementedError


def test_served_and_evaluated_labels_agree_at_a_threshold_other_than_half():
    meta = ModelMetadata(
        backbone="test_efficientnet",
        data_config=DataConfig((64, 64), (0.5,) * 3, (0.5,) * 3),
        temperature=1.3,
    )
    margins = np.array([-3.0, -1.6, -1.1, -0.4, 0.0, 2.0])
    logits = np.stack([-margins / 2, margins / 2], axis=1).astype(np.float32)
    p = _FromLogits(meta).probabilities(logits)
    threshold = float(p[2])  # film 2 sits exactly at the threshold, about 0.30
    assert 0.25 < threshold < 0.35 and 0.3 < p[3] < 0.5
    meta = dataclasses.replace(meta, threshold=threshold, uncertain_band=(0.2, 0.4))
    names = [f"film{i}.png" for i in range(len(p))]

    served = _FromLogits(meta).postprocess(logits, np.zeros((len(p), 4), np.float32), names)
    labels = [pred.label for pred in served]
    # by its own threshold, not 0.5: film 3 (p about 0.4) is PNEUMONIA, film 1 is not
    assert labels == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA", "PNEUMONIA", "PNEUMONIA"]
    assert served[2].probability == threshold

    records = [
        ImageRecord(Path(n), n, "test", label, int(label == "PNEUMONIA"), f"p{i}")
        for i, (n, label) in enumerate(zip(names, labels, strict=True))
    ]
    evaluated = [row["predicted"] for row in _prediction_rows(records, p, meta.threshold)]
    assert evaluated == labels
    y_served = np.array([int(label == "PNEUMONIA") for label in labels])
    assert compute_metrics(y_served, p, meta.threshold)["accuracy"] == 1.0
