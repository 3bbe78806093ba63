"""Out-of-distribution check: how far an image's backbone features lie from the training
images' features, as the cosine distance to the k-th nearest of a stored reference sample
(deep nearest neighbours, Sun et al. 2022). The cut-off is a high quantile of the validation
scores widened by a margin, so nearly all real chest X-rays pass (including full-size
originals, which sit a little further out than the 224x224 copies) while photos, documents,
microscopy and other non-X-rays land beyond it. A Mahalanobis distance was tried first and
separated these far less well."""

from __future__ import annotations

import numpy as np

from pneumo.models.checkpoint import OodConfig

PREFIX = "ood."


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_ood(
    train_features: np.ndarray,
    val_features: np.ndarray,
    *,
    k: int = 10,
    max_reference: int = 1000,
    quantile: float = 0.995,
    margin: float = 1.2,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], OodConfig]:
    """Keep up to ``max_reference`` normalised training features and set the cut-off on
    ``val_features``. Returns the tensors to store beside the weights (keys start with
    ``ood.``) and the settings for the model metadata."""
    reference = _normalise(train_features)
    if len(reference) > max_reference:
        keep = np.random.default_rng(seed).choice(len(reference), max_reference, replace=False)
        reference = reference[np.sort(keep)]
    k = int(max(1, min(k, len(reference))))
    tensors = {PREFIX + "reference": reference.astype(np.float16)}
    scores = ood_scores(val_features, tensors, k=k)
    cutoff = float(np.quantile(scores, quantile) * margin)
    settings = OodConfig(
        cutoff=cutoff, k=k, quantile=quantile, margin=margin, reference_size=len(reference)
    )
    return tensors, settings


def ood_scores(features: np.ndarray, tensors: dict, *, k: int = 10) -> np.ndarray:
    """Per-row cosine distance to the k-th nearest reference feature (0 = identical)."""
    reference = np.asarray(tensors[PREFIX + "reference"], dtype=np.float32)
    k = int(max(1, min(k, len(reference))))
    similarity = _normalise(features) @ reference.T
    # k-th largest similarity = k-th smallest distance
    kth = np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return (1.0 + kth).astype(np.float64)
