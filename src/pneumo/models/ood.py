"""Out-of-distribution check: how far an image's backbone features lie from the training
images' features, as the cosine distance to the k-th nearest of a stored reference sample
(deep nearest neighbours, Sun et al. 2022). The cut-off is a high quantile of the validation
scores widened by a margin, so nearly all real chest X-rays pass (including full-size
originals, which sit a little further out than the 224x224 copies) while photos, documents,
microscopy and other non-X-rays land beyond it. A Mahalanobis distance was tried first and
separated these far less well.

A second check reads the pixels, not the network: the film's coarse layout (a 24x24 copy, mean
removed) correlated with the mean training film. Chest films correlate 0.25 and up (the
smallest of 600 training films; full-size originals 0.26), grey photographs, documents,
textures and microscopy -0.45 to 0.15. It matters most for networks fine-tuned with trained
batch norm, whose features put several grey photographs as close to the training films as some
real films are.

A third reads the same coarse layout against the subspace the training films span: the distance
of the layout from the mean training layout that its ``LAYOUT_COMPONENTS`` main directions do not
explain. A picture can correlate with the mean film and still be nothing like any film (a CT or
MR slice exported as a picture, a phantom): the residual catches what the correlation misses.
Validation films reach 0.55 at most, full-size originals 0.44; pixel exports of CT slices 0.63.
The cut-off is the validation 99.5% quantile widened by ``RESIDUAL_MARGIN``."""

from __future__ import annotations

import numpy as np

from pneumo.models.checkpoint import DEFAULT_K, OodConfig

PREFIX = "ood."
LAYOUT_KEY = PREFIX + "layout_template"
LAYOUT_SIDE = 24
"""Side of the coarse copy the layout check compares (576 values)."""
LAYOUT_QUANTILE = 0.005
LAYOUT_MARGIN = 0.4
"""The layout cut-off is this share of the validation films' 0.5% quantile of correlation."""
LAYOUT_BASIS_KEY = PREFIX + "layout_basis"
"""Mean training layout, then its ``LAYOUT_COMPONENTS`` principal directions (rows)."""
LAYOUT_COMPONENTS = 20
RESIDUAL_QUANTILE = 0.995
RESIDUAL_MARGIN = 1.3


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def layout_vector(grey) -> np.ndarray:
    """The coarse layout of a grey PIL image: a ``LAYOUT_SIDE``-square copy, mean removed, unit
    length (so neither exposure nor contrast changes it)."""
    from PIL import Image

    small = grey.convert("L").resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BILINEAR)
    a = np.asarray(small, dtype=np.float32).ravel()
    a = a - a.mean()
    return a / max(float(np.linalg.norm(a)), 1e-6)


def fit_layout(train_layouts: np.ndarray, val_layouts: np.ndarray) -> tuple[np.ndarray, float]:
    """The mean training layout (unit length) and the cut-off below which a picture is not
    laid out like a chest film (``LAYOUT_MARGIN`` x the validation 0.5% quantile)."""
    template = np.asarray(train_layouts, dtype=np.float32).mean(axis=0)
    template /= max(float(np.linalg.norm(template)), 1e-6)
    scores = np.asarray(val_layouts, dtype=np.float32) @ template
    return template, float(np.quantile(scores, LAYOUT_QUANTILE) * LAYOUT_MARGIN)


def fit_layout_subspace(
    train_layouts: np.ndarray, val_layouts: np.ndarray, components: int = LAYOUT_COMPONENTS
) -> tuple[np.ndarray, float]:
    """The training layouts' mean and main directions (rows of one array) and the residual
    cut-off above which a picture lies off the films' subspace."""
    train = np.asarray(train_layouts, dtype=np.float64)
    mean = train.mean(axis=0)
    components = max(1, min(components, len(train) - 1, train.shape[1]))
    directions = np.linalg.svd(train - mean, full_matrices=False)[2][:components]
    basis = np.vstack([mean, directions]).astype(np.float32)
    residuals = layout_residuals(np.asarray(val_layouts, dtype=np.float32), basis)
    return basis, float(np.quantile(residuals, RESIDUAL_QUANTILE) * RESIDUAL_MARGIN)


def layout_residuals(layouts: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per row: how far a layout lies from the subspace ``basis`` (``fit_layout_subspace``)."""
    offset = np.atleast_2d(layouts).astype(np.float64) - basis[0]
    explained = offset @ basis[1:].T.astype(np.float64)
    left = (offset * offset).sum(axis=1) - (explained * explained).sum(axis=1)
    return np.sqrt(np.maximum(left, 0.0))


def fit_ood(
    train_features: np.ndarray,
    val_features: np.ndarray,
    *,
    k: int = DEFAULT_K,
    max_reference: int = 1000,
    quantile: float = 0.995,
    margin: float = 1.2,
    seed: int = 0,
    layouts: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], OodConfig]:
    """Keep up to ``max_reference`` normalised training features and set the cut-off on
    ``val_features``; with ``layouts`` (training and validation ``layout_vector``s) the layout
    check too. Returns the tensors to store beside the weights (keys start with ``ood.``) and
    the settings for the model metadata."""
    reference = _normalise(train_features)
    if len(reference) > max_reference:
        keep = np.random.default_rng(seed).choice(len(reference), max_reference, replace=False)
        reference = reference[np.sort(keep)]
    k = int(max(1, min(k, len(reference))))
    tensors = {PREFIX + "reference": reference.astype(np.float16)}
    scores = ood_scores(val_features, tensors, k=k)
    cutoff = float(np.quantile(scores, quantile) * margin)
    layout_cutoff = residual_cutoff = None
    if layouts is not None:
        template, layout_cutoff = fit_layout(*layouts)
        basis, residual_cutoff = fit_layout_subspace(*layouts)
        tensors[LAYOUT_KEY] = template
        tensors[LAYOUT_BASIS_KEY] = basis
    settings = OodConfig(
        cutoff=cutoff,
        k=k,
        quantile=quantile,
        margin=margin,
        reference_size=len(reference),
        layout_cutoff=layout_cutoff,
        layout_residual_cutoff=residual_cutoff,
    )
    return tensors, settings


def ood_scores(features: np.ndarray, tensors: dict, *, k: int = DEFAULT_K) -> np.ndarray:
    """Per-row cosine distance to the k-th nearest reference feature (0 = identical)."""
    reference = np.asarray(tensors[PREFIX + "reference"], dtype=np.float32)
    k = int(max(1, min(k, len(reference))))
    similarity = _normalise(features) @ reference.T
    # k-th largest similarity = k-th smallest distance
    kth = np.partition(-similarity, k - 1, axis=1)[:, k - 1]
    return (1.0 + kth).astype(np.float64)
