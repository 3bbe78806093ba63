"""The out-of-distribution score separates far-away features from the training cloud."""

from __future__ import annotations

import numpy as np

from pneumo.inference.ood import fit_ood, ood_scores


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
