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


@pytest.mark.realdata
def test_nothing_but_a_chest_film_is_diagnosed(tmp_path):
    """Grey photographs, documents, textures, microscopy, faces, screenshots and other radiology
    (CT and MR slices exported as pictures, a head phantom) pass the colour check: the bundled
    model's feature distance and its two layout checks must flag every one, with no diagnosis,
    on the local path and through the Ray stages alike."""
    from ood_pictures import pictures
    from pneumo.inference.engine import load_predictor
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    corpus = pictures()
    predictor = load_predictor(backend="onnx")
    ood = predictor.metadata.ood
    assert ood.layout_cutoff is not None and ood.layout_residual_cutoff is not None
    preds = predictor.predict_images(list(corpus.values()), list(corpus))
    missed = [p.source for p in preds if not p.ood]
    assert missed == [], f"diagnosed although not chest X-rays: {missed}"
    assert all(p.label is None and p.probability is None for p in preds)
    # Each check earns its place: features alone, and the layout checks alone, catch many.
    by_features = [p.source for p in preds if p.ood_score > ood.cutoff]
    by_layout = [p.source for p in preds if "not laid out like a chest film" in p.ood_reason]
    assert len(by_features) >= 10 and len(by_layout) >= 20, (by_features, by_layout)

    # `pneumo predict --ray`: decode tasks measure the statistics, actors classify.
    import numpy as np

    from pneumo.inference.pipeline import FilmPipeline
    from pneumo.inference.ray_predict import _decode_batch, _PredictActor

    files = []
    for i, (name, picture) in enumerate(corpus.items()):
        files.append(str(tmp_path / f"{i:02d}-{name.replace(' ', '_')}.png"))
        picture.save(files[-1])
    batch = {
        "index": np.arange(len(files)),
        "path": np.array(files, dtype=object),
        "file": np.array(files, dtype=object),
        "error": np.array([""] * len(files), dtype=object),
    }
    model = str(BUNDLED_MODEL_DIR)
    decoded = _decode_batch(batch, FilmPipeline.load(model))
    rows = _PredictActor(model, "onnx", "fp32", 1, 64)(decoded).to_pylist()
    assert [r["ood"] for r in rows] == [True] * len(files)
    assert all(r["class"] is None and r["probability"] is None for r in rows)


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
