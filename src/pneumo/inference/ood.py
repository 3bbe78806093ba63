"""Out-of-distribution check: how far an image's backbone features lie from the training
features, as a Mahalanobis distance in the top principal components plus the residual outside
them. The cut-off is a high quantile of the validation scores, so about 1% of real chest X-rays
are flagged and a cat photo lands far beyond it."""

from __future__ import annotations

import numpy as np

PREFIX = "ood."


def fit_ood(
    train_features: np.ndarray,
    val_features: np.ndarray,
    *,
    components: int = 32,
    quantile: float = 0.995,
    margin: float = 1.5,
) -> tuple[dict[str, np.ndarray], dict]:
    """Fit the feature statistics on ``train_features`` and the cut-off on ``val_features``.

    Returns ``(tensors, settings)``: tensors to store beside the weights (keys start with
    ``ood.``) and settings for the model metadata. ``margin`` widens the validation quantile so
    that ordinary scanner differences are not flagged.
    """
    x = np.asarray(train_features, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    k = int(min(components, x.shape[1], max(1, x.shape[0] - 1)))
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:k]
    variances = (s[:k] ** 2) / max(1, x.shape[0] - 1) + 1e-6
    residual = centred - (centred @ basis.T) @ basis
    residual_var = float((residual**2).sum(axis=1).mean()) + 1e-6
    tensors = {
        PREFIX + "mean": mean.astype(np.float32),
        PREFIX + "basis": basis.astype(np.float32),
        PREFIX + "variances": variances.astype(np.float32),
        PREFIX + "residual_var": np.array([residual_var], dtype=np.float32),
    }
    scores = ood_scores(val_features, tensors)
    cutoff = float(np.quantile(scores, quantile) * margin)
    settings = {"method": "pca-mahalanobis", "components": k, "quantile": quantile,
                "margin": margin, "cutoff": cutoff}
    return tensors, settings


def ood_scores(features: np.ndarray, tensors: dict) -> np.ndarray:
    """Per-row distance from the training features (about 1 on typical training images)."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items() if k.startswith(PREFIX)}
    x = np.asarray(features, dtype=np.float64) - t[PREFIX + "mean"]
    basis = t[PREFIX + "basis"]
    projected = x @ basis.T
    k = basis.shape[0]
    mahalanobis = (projected**2 / t[PREFIX + "variances"]).sum(axis=1) / k
    residual = ((x - projected @ basis) ** 2).sum(axis=1) / t[PREFIX + "residual_var"][0]
    return np.sqrt(0.5 * (mahalanobis + residual))
