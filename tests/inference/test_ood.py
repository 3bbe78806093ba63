"""The out-of-distribution score separates far-away features from the training cloud."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.models.ood import fit_ood, ood_scores


def test_far_features_are_flagged_and_near_ones_pass():
    rng = np.random.default_rng(0)
    centre = rng.normal(0, 1, 64)
    cloud = centre + rng.normal(0, 0.3, (600, 64))
    tensors, settings = fit_ood(cloud[:400], cloud[400:550], k=5)
    assert settings.cutoff > 0 and settings.method == "knn-cosine"
    inside = ood_scores(cloud[550:], tensors, k=5)
    outside = ood_scores(rng.normal(0, 1, (20, 64)), tensors, k=5)
    assert (inside <= settings.cutoff).mean() >= 0.95
    assert (outside > settings.cutoff).all()


def test_reference_sample_is_capped_and_stored_small():
    features = np.random.default_rng(1).normal(0, 1, (3000, 32))
    tensors, settings = fit_ood(features, features[:100], max_reference=500)
    assert tensors["ood.reference"].shape == (500, 32)
    assert tensors["ood.reference"].dtype == np.float16
    assert settings.reference_size == 500


def test_the_layout_check_tells_a_chest_film_from_other_grey_pictures(tmp_path):
    """Pixels, not features: a page of text, a texture or a film on its side is not laid out
    like a chest film, and the predictor says so instead of diagnosing it; films of every
    exposure pass."""
    import skimage.data
    from PIL import Image, ImageOps

    from pneumo.inference.engine import load_predictor
    from synthetic import build_tiny_model, make_xray

    predictor = load_predictor(build_tiny_model(tmp_path / "m", with_layout=True), backend="onnx")
    cutoff = predictor.metadata.ood.layout_cutoff
    assert cutoff is not None and 0 < cutoff < 1
    films = [make_xray(500 + i, i % 2, 128) for i in range(6)]
    films += [ImageOps.equalize(films[0]), films[1].point(lambda v: int(255 * (v / 255) ** 1.6))]
    others = {
        "text": Image.fromarray(skimage.data.text()),
        "checkerboard": Image.fromarray(skimage.data.checkerboard()),
        "film on its side": films[2].rotate(90),
    }
    preds = predictor.predict_images([*films, *others.values()], [*"abcdefgh", *others])
    for p in preds[: len(films)]:
        assert "not laid out like a chest film" not in (p.ood_reason or ""), p
    for p in preds[len(films) :]:
        assert p.ood and p.label is None and p.probability is None
        assert "not laid out like a chest film" in p.ood_reason, p.source


def test_a_model_without_a_layout_template_skips_the_check(tiny_model):
    import skimage.data
    from PIL import Image

    from pneumo.inference.engine import load_predictor

    predictor = load_predictor(tiny_model, backend="onnx")
    assert predictor.layout_template is None and predictor.metadata.ood.layout_cutoff is None
    (pred,) = predictor.predict_images([Image.fromarray(skimage.data.text())], ["text"])
    assert "not laid out" not in (pred.ood_reason or "")


def _pixels(array):
    """Any 2-D array as an 8-bit grey picture (1-99% window), as a viewer would export it."""
    from PIL import Image

    a = np.asarray(array, dtype=np.float64)
    lo, hi = np.percentile(a, [1, 99])
    return Image.fromarray((255 * np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)).astype(np.uint8))


@pytest.mark.realdata
def test_the_layout_subspace_catches_cross_sections_the_correlation_lets_through(
    real_data_root, originals_dir
):
    """A CT or MR slice exported as a picture correlates with the mean chest film well enough to
    pass the correlation check; its layout lies off the subspace real films span, so the
    residual check catches it, while unseen training films and full-size originals pass."""
    import warnings

    import pydicom
    import skimage.data
    from pydicom.data import get_testdata_file

    from pneumo.data.decode import load_grey
    from pneumo.models.ood import (
        fit_layout,
        fit_layout_subspace,
        layout_residuals,
        layout_vector,
    )

    films = sorted((real_data_root / "train").rglob("*.jpeg"))
    picked = [films[i] for i in np.random.default_rng(0).permutation(len(films))[:1300]]
    layouts = np.stack([layout_vector(load_grey(f)) for f in picked])
    train, val, unseen = layouts[:800], layouts[800:1100], layouts[1100:]
    originals = np.stack(
        [layout_vector(load_grey(f)) for f in sorted(originals_dir.rglob("*.jpeg"))]
    )
    template, corr_cutoff = fit_layout(train, val)
    basis, cutoff = fit_layout_subspace(train, val)
    assert basis.shape == (21, 576)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slices = {
            name: _pixels(pydicom.dcmread(get_testdata_file(name)).pixel_array)
            for name in ("CT_small.dcm", "MR_small.dcm")
        }
    slices["head phantom"] = _pixels(skimage.data.shepp_logan_phantom())
    others = np.stack([layout_vector(img) for img in slices.values()])

    assert (layout_residuals(unseen, basis) <= cutoff).mean() >= 0.99
    assert (layout_residuals(originals, basis) <= cutoff).all()
    assert (layout_residuals(others, basis) > cutoff).all(), dict(
        zip(slices, layout_residuals(others, basis).round(3), strict=True)
    )
    # The correlation check alone lets the CT slice through: the residual is what catches it.
    assert float(others[0] @ template) > corr_cutoff


def test_the_bundled_model_sets_a_ct_slice_aside_by_its_layout(tmp_path):
    """End to end, the served decision uses the layout-subspace check: a CT slice exported as a
    picture gets no diagnosis, with the layout named as the reason, although it correlates with
    the mean chest film well enough to pass the correlation check on its own. (A predictor that
    computed the residual but compared it to the wrong cut-off passed every test before.)"""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    from pneumo.inference.engine import load_predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct = _pixels(pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array)
    path = tmp_path / "ct-slice.png"
    ct.save(path)
    predictor = load_predictor(None, backend="onnx")
    ood = predictor.metadata.ood
    stats = predictor.pipeline.decode(str(path), path.name).stats
    assert stats.layout >= ood.layout_cutoff, "the correlation check alone would let it pass"
    assert stats.layout_residual > ood.layout_residual_cutoff
    (pred,) = predictor.predict_sources([path])
    assert pred.ood and pred.label is None and pred.probability is None
    assert "not laid out like a chest film" in pred.ood_reason
