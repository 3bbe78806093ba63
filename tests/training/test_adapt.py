"""`pneumo adapt` on a synthetic site: real films with a real acquisition shift, the bundled
model, and the adapted model measured on films the adaptation never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import DataError
from pneumo.models.checkpoint import BUNDLED_MODEL_DIR, read_metadata
from pneumo.training.adapt import MIN_PER_CLASS, adapt, robust_target, threshold_for_share
from pneumo.training.finalize import uncertain_band

pytestmark = pytest.mark.realdata

GAMMA = 0.3
BLUR = 2.0
"""A much brighter exposure and a softer detector than the training films' (gamma 0.3, blur
sigma 2 px): the bundled model calls many NORMAL films PNEUMONIA under them."""


def _site(root: Path, data: Path, classes: dict[str, slice], *, labeled: bool) -> Path:
    from PIL import ImageFilter

    table = [round(255 * (i / 255) ** GAMMA) for i in range(256)]
    for name, part in classes.items():
        files = sorted((data / "train" / name).glob("*.jpeg"))[part]
        target = root / name if labeled else root
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            img = Image.open(f).convert("L").point(table).filter(ImageFilter.GaussianBlur(BLUR))
            img.save(target / f.name)
    return root


def _balanced_accuracy(model_dir: Path, folder: Path) -> tuple[float, float]:
    from pneumo.data.discover import folder_records
    from pneumo.evaluation.metrics import compute_metrics
    from pneumo.inference.engine import load_predictor

    records, _ = folder_records(folder)
    predictor = load_predictor(model_dir, backend="torch")
    preds = predictor.predict_sources([r.path for r in records])
    p = np.array([pred.model_probability for pred in preds])
    y = np.array([r.label_index for r in records])
    m = compute_metrics(y, p, predictor.metadata.threshold)
    return m["balanced_accuracy"], m["specificity"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory, real_data_root):
    if not (BUNDLED_MODEL_DIR / "model.json").is_file():
        pytest.fail("the bundled model is missing from models/default")
    root = tmp_path_factory.mktemp("site")
    fit = {"NORMAL": slice(0, 40), "PNEUMONIA": slice(0, 40)}
    held = {"NORMAL": slice(40, 80), "PNEUMONIA": slice(40, 80)}
    return {
        "fit": _site(root / "fit", real_data_root, fit, labeled=True),
        "held": _site(root / "held", real_data_root, held, labeled=True),
        "flat": _site(root / "flat", real_data_root, {**fit}, labeled=False),
    }


def test_labeled_adaptation_repairs_a_shift_on_films_it_never_saw(sites, tmp_path):
    out = tmp_path / "adapted"
    result = adapt(images=sites["fit"], output=out, workers=1)
    assert result.mode == "labeled" and result.n_films == 80
    assert {"temperature", "threshold"} <= set(result.refit)
    base_bacc, base_spec = _balanced_accuracy(BUNDLED_MODEL_DIR, sites["held"])
    new_bacc, new_spec = _balanced_accuracy(out, sites["held"])
    # The shift costs the base model its specificity; the adapted one gets it back.
    assert base_spec < 0.8
    assert new_bacc >= base_bacc + 0.05, (base_bacc, new_bacc)
    meta = read_metadata(out)
    assert meta.adaptation["base_model"] == str(BUNDLED_MODEL_DIR)
    assert meta.adaptation["n_films"] == 80 and meta.adaptation["mode"] == "labeled"
    assert json.loads((out / "model.json").read_text())["threshold"] == result.threshold
    # served with the band its own threshold gives, and never sharper than the base model
    assert meta.uncertain_band == uncertain_band(meta.threshold)
    assert meta.temperature >= 1.0


def test_unlabeled_adaptation_keeps_the_share_called_pneumonia(sites, tmp_path, monkeypatch):
    import pneumo.training.adapt as adapt_module

    monkeypatch.setattr(adapt_module, "MIN_UNLABELED", 40)
    result = adapt(images=sites["flat"], output=tmp_path / "flat", workers=1)
    assert result.mode == "unlabeled" and result.refit == ["batchnorm", "ood", "threshold"]
    figures = result.figures
    assert figures["share_pneumonia_adapted"] == pytest.approx(figures["share_pneumonia"], abs=0.03)
    meta = read_metadata(tmp_path / "flat")
    assert meta.ood.reference_size == 40  # half the films are the new reference


def test_too_few_films_are_refused_with_the_counts(sites, tmp_path):
    with pytest.raises(DataError, match="need at least 100"):
        adapt(images=sites["flat"], output=tmp_path / "x")
    one_class = tmp_path / "one"
    (one_class / "NORMAL").mkdir(parents=True)
    with pytest.raises(DataError, match="both NORMAL/ and PNEUMONIA/"):
        adapt(images=one_class, output=tmp_path / "y")
    with pytest.raises(DataError, match="new folder"):
        adapt(images=sites["fit"], output=BUNDLED_MODEL_DIR)
    assert MIN_PER_CLASS <= 40


def test_threshold_helpers():
    p = np.linspace(0.01, 0.99, 100)
    t = threshold_for_share(p, 0.3)
    assert np.mean(p >= t) == pytest.approx(0.3)
    assert robust_target(0.95, 100) == pytest.approx(0.95 + np.sqrt(0.95 * 0.05 / 100))
    assert robust_target(0.999, 1) == 1.0
