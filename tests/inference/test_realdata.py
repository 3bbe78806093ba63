"""The bundled model on the full-size originals (skipped until models/default exists)."""

from __future__ import annotations

import pytest


@pytest.mark.realdata
@pytest.mark.slow
def test_bundled_model_on_full_size_originals(originals_dir):
    from pneumo.inference.engine import load_predictor
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.skip("bundled model models/default not trained yet")
    files = sorted(originals_dir.rglob("*.jpeg"))
    preds = load_predictor().predict_sources(files)
    assert all(p.error is None for p in preds)
    truth = ["PNEUMONIA" if f.parent.name == "PNEUMONIA" else "NORMAL" for f in files]
    accuracy = sum(p.label == t for p, t in zip(preds, truth, strict=True)) / len(files)
    assert accuracy >= 0.85  # training images: anything lower means preprocessing drifted
    assert sum(p.ood for p in preds) <= 0.05 * len(files)  # real X-rays, incl. the RGB ones
