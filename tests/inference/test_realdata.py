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


GREY_PICTURES = (
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "horse",
    "clock",
    "brick",
    "grass",
    "gravel",
    "checkerboard",
    "cell",
    "microaneurysms",
)


@pytest.mark.realdata
def test_feature_distance_flags_grey_pictures_that_are_not_x_rays():
    """Grey pictures pass the colour check; the real model's feature distance must catch them."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from pneumo.inference.engine import load_predictor
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    images = []
    for name in GREY_PICTURES:
        a = np.asarray(getattr(skimage.data, name)())
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(1e-9, np.ptp(a))).astype(np.uint8)
        images.append(Image.fromarray(a).convert("L"))
    predictor = load_predictor(backend="torch")
    cutoff = predictor.metadata.ood.cutoff
    preds = predictor.predict_images(images, list(GREY_PICTURES))
    far = [p.source for p in preds if p.ood_score > cutoff]
    # Features alone catch some (a fine-tune with trained batch norm puts grey photographs
    # nearer its films than LP-FT did); with the layout check every one is caught.
    assert len(far) >= 4, f"only {far} lie beyond the feature-distance cut-off {cutoff:.3f}"
    missed = [p.source for p in preds if not p.ood]
    assert missed == [], f"diagnosed although not chest X-rays: {missed}"
    assert all(p.label is None and p.probability is None for p in preds)


@pytest.mark.realdata
def test_the_layout_check_passes_real_films(real_data_root):
    """Validation and canary films of the shipped model pass the layout check (the cut-off
    sits far below them), so it costs real films no diagnosis."""
    import numpy as np

    from pneumo.inference.engine import load_predictor
    from pneumo.training.train import film_layouts

    predictor = load_predictor(backend="onnx")
    films = sorted((real_data_root / "val").rglob("*.jpeg"))
    films += sorted((real_data_root / "train").rglob("*.jpeg"))[::10]
    records = [type("R", (), {"path": p})() for p in films]
    scores = film_layouts(records) @ predictor.layout_template
    assert (scores < predictor.metadata.ood.layout_cutoff).sum() == 0, np.sort(scores)[:5]
