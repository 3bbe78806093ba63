"""The bundled model is there, and its model card's figures are what its shipped weights give."""

from __future__ import annotations

import json

import pytest

from pneumo.models.checkpoint import BUNDLED_MODEL_DIR, read_metadata
from pneumo.training.config import TrainConfig

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_card_figures_are_recomputed_from_the_shipped_weights(real_data_root):
    from pneumo.training.bundle import shipped_figures

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    meta = read_metadata(BUNDLED_MODEL_DIR)
    cfg = TrainConfig.from_dict({**meta.training, "data": real_data_root})
    recorded = json.loads((BUNDLED_MODEL_DIR / "figures.json").read_text())
    from pneumo.inference.engine import load_predictor

    figures = shipped_figures(load_predictor(BUNDLED_MODEL_DIR, backend="torch"), cfg)
    card = (BUNDLED_MODEL_DIR / "MODEL_CARD.md").read_text()
    for key in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert figures["validation"][key] == pytest.approx(recorded["validation"][key], abs=5e-4)
        assert f"| {key} | {figures['validation'][key]:.4f} |" in card
    assert figures["canary"]["correct"] == recorded["canary"]["correct"]
    assert figures["validation"]["n"] == meta.metrics["n"]
