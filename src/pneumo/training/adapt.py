"""Site adaptation: a hospital fits the model to its own films before deploying it.

Two cases, chosen by the folder's layout:

- **Unlabeled films** (a flat folder): batch-norm statistics and the out-of-distribution
  reference are re-estimated on the site's pixels, which can sharpen the ranking of its films.
  The statistics move by how the site's films differ from the training films (the reference
  stored with the model), so films like the training ones leave the network unchanged.
  It also moves every probability, so the threshold is then set so that the share of the site's
  films called PNEUMONIA stays what the base model called: without labels, nothing may move the
  operating point (in the issue's probes an unchecked re-estimation moved sensitivity from 92% to
  72%).
- **Labeled films** (``NORMAL/`` and ``PNEUMONIA/`` subfolders): the same re-estimation, kept only
  if it does not lower ROC-AUC on these films; then the temperature (never below 1: it may
  soften, never sharpen) and the threshold are refit on the labels (the highest threshold whose
  sensitivity on the site's films reaches the target plus one binomial standard error, so that
  new films of the site still reach the target). A threshold that lands at the extreme of the
  films' scores, or outside (0.001, 0.999), is refused: too few films to place it honestly.

The result is an ordinary model directory with its provenance in ``model.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo import CLASS_NAMES
from pneumo.data.discover import ImageRecord, folder_records
from pneumo.errors import DataError
from pneumo.evaluation.calibration import calibrated_probabilities, fit_temperature
from pneumo.evaluation.metrics import compute_metrics, roc_auc
from pneumo.evaluation.thresholds import EPS, choose_threshold
from pneumo.models.checkpoint import OodConfig, load_model, resolve_model_dir, save_model
from pneumo.models.ood import fit_ood
from pneumo.models.provenance import Adaptation

log = logging.getLogger(__name__)

MIN_UNLABELED = 100
"""Fewer films give noisy batch-norm statistics and a noisy share of PNEUMONIA calls."""
MIN_PER_CLASS = 20
"""A threshold and a temperature need at least this many films of each class."""


@dataclass
class AdaptResult:
    """What ``adapt`` did, as written into the adapted model's metadata."""

    base_model: str
    mode: str
    n_films: int
    refit: list[str]
    threshold: float
    temperature: float
    figures: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _check_counts(records: list[ImageRecord], labeled: bool, folder: Path) -> None:
    if labeled:
        counts = {n: sum(r.label == n for r in records) for n in CLASS_NAMES}
        short = {n: c for n, c in counts.items() if c < MIN_PER_CLASS}
        if short:
            have = ", ".join(f"{c} {n}" for n, c in counts.items())
            raise DataError(
                f"{folder}: too few labeled films to refit the threshold ({have}); "
                f"need at least {MIN_PER_CLASS} of each class"
            )
    elif len(records) < MIN_UNLABELED:
        raise DataError(
            f"{folder}: too few films to adapt to ({len(records)}); need at least "
            f"{MIN_UNLABELED} unlabeled films of the site (or NORMAL/ and PNEUMONIA/ subfolders "
            f"with at least {MIN_PER_CLASS} each)"
        )


def _run(model, records, data_config, workers: int) -> dict:
    """Logits and features of the site's films, and the ones that could not be read."""
    from pneumo.data.dataset import make_loader
    from pneumo.training.loops import predict_loader
    from pneumo.training.transforms import image_dataset

    loader = make_loader(image_dataset(records, data_config), batch_size=32, workers=workers)
    out = predict_loader(model, loader)
    out["skipped"] = [path for path, _ in loader.skipped]
    return out


def threshold_for_share(p: np.ndarray, share: float) -> float:
    """The threshold under which ``1 - share`` of ``p`` falls: the films called PNEUMONIA
    (p >= threshold) are then ``share`` of them, as near as ties allow."""

    if share <= 0:
        return float(np.clip(p.max() + EPS, EPS, 1 - EPS))
    ordered = np.sort(p)[::-1]
    k = max(1, round(share * len(p)))
    above = ordered[k - 1]
    below = ordered[k] if k < len(ordered) else 0.0
    return float(np.clip((above + below) / 2, EPS, 1 - EPS))


def robust_target(target: float, n_positive: int) -> float:
    """The sensitivity to reach on ``n_positive`` site films so that new films of the site still
    reach ``target``: one binomial standard error above it (at most 1)."""
    return min(1.0, target + math.sqrt(target * (1 - target) / max(1, n_positive)))


THRESHOLD_RANGE = (0.001, 0.999)
"""Thresholds an adaptation may place: beyond them p rests on a film or two in the tails."""


def labeled_operating_point(
    logits: np.ndarray, y: np.ndarray, target_sensitivity: float, folder: Path
) -> tuple[float, float, float]:
    """(temperature, threshold, sensitivity goal) refit on a site's labeled films. T >= 1 as in
    training: on few, well separated films an unbounded fit sharpens p to 0 or 1 (T = 0.05,
    threshold 0.99998 on 20 + 20 films). A threshold the rule can only place at the extreme of
    the films' scores, or outside ``THRESHOLD_RANGE``, is refused: it says nothing about the
    site's next film."""
    temperature = fit_temperature(logits, y, balanced=True, min_temperature=1.0)
    p = calibrated_probabilities(logits, temperature)[:, 1]
    goal = robust_target(target_sensitivity, int((y == 1).sum()))
    threshold = float(choose_threshold(y, p, method="sensitivity", target_sensitivity=goal))
    lo, hi = THRESHOLD_RANGE
    if not lo < threshold < hi:
        problem = f"p = {threshold:.5f}, outside ({lo}, {hi})"
    elif threshold <= p.min():
        problem = f"p = {threshold:.4f}, the lowest score: every film would be PNEUMONIA"
    elif threshold >= p.max():
        problem = f"p = {threshold:.4f}, the highest score: one film would be PNEUMONIA"
    else:
        return temperature, threshold, goal
    raise DataError(
        f"{folder}: cannot place a threshold honestly on {len(y)} labeled films: reaching "
        f"sensitivity {goal:.1%} on them puts it at {problem}; label more films of the site, "
        "or adapt without labels (a flat folder)"
    )


def adapt(
    *,
    model: Path | None = None,
    images: Path,
    output: Path,
    target_sensitivity: float = 0.95,
    workers: int = 2,
    provenance: dict | None = None,
) -> AdaptResult:
    """Adapt a model to a site's films and write the adapted model directory to ``output``.

    IMAGES is a flat folder of the site's unlabeled films (batch-norm statistics and the
    out-of-distribution reference are re-estimated, then the threshold keeps the share of films
    called PNEUMONIA that the base model gave), or a folder with NORMAL/ and PNEUMONIA/
    subfolders (the same re-estimation, kept only if it does not lower ROC-AUC on these films,
    then temperature (never below 1) and threshold refit on the labels to reach
    --target-sensitivity). Too few films, or a threshold that can only be placed at the extreme
    of their scores, are refused with a message. The adapted model records its base model, the number of
    films and what was refit in model.json (with --from-records, also the records used).
    """
    import torch

    from pneumo.models.checkpoint import uncertain_band
    from pneumo.training.batchnorm import (
        BN_REFERENCE,
        batchnorm_statistics,
        recompute_batchnorm,
        shift_batchnorm,
    )
    from pneumo.training.loops import image_batches

    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    model_dir = resolve_model_dir(model)
    output = Path(output)
    if output.resolve() == model_dir.resolve():
        raise DataError(f"{output}: write the adapted model to a new folder, not over its base")
    records, labeled = folder_records(images)
    _check_counts(records, labeled, Path(images))
    base, meta, extra = load_model(model_dir)
    dcfg = meta.data_config

    before = _run(base, records, dcfg, workers)
    kept = set(before["paths"])
    if len(kept) < len(records):
        log.warning("%d of %d films could not be read", len(records) - len(kept), len(records))
    records = [r for r in records if str(r.path) in kept]
    _check_counts(records, labeled, Path(images))
    p_before = calibrated_probabilities(before["logits"], meta.temperature)[:, 1]

    adapted = copy.deepcopy(base)
    reference = {k[len(BN_REFERENCE) :]: v for k, v in extra.items() if k.startswith(BN_REFERENCE)}
    if reference:
        # Relative: moved by how the site differs from the training films, so a site that
        # looks like them leaves the network as it is.
        site = batchnorm_statistics(base, image_batches(records, dcfg, workers=workers))
        shift_batchnorm(adapted, reference, site)
    else:  # models written before the reference was stored
        recompute_batchnorm(adapted, image_batches(records, dcfg, workers=workers))
    after = _run(adapted, records, dcfg, workers)
    if after["paths"] != before["paths"]:
        raise DataError("the site's films changed while adapting; run again")
    refit = ["batchnorm", "ood"]
    figures: dict = {}

    if labeled:
        y = before["labels"]
        auc_before = roc_auc(y, p_before)
        auc_after = roc_auc(y, after["logits"][:, 1] - after["logits"][:, 0])
        figures.update(roc_auc_base=auc_before, roc_auc_batchnorm=auc_after)
        if auc_after < auc_before:
            log.info(
                "batch-norm re-estimation lowered ROC-AUC on the site's films (%.4f -> %.4f): "
                "kept the base statistics",
                auc_before,
                auc_after,
            )
            adapted, after, refit = base, before, []
        temperature, threshold, goal = labeled_operating_point(
            after["logits"], y, target_sensitivity, Path(images)
        )
        p = calibrated_probabilities(after["logits"], temperature)[:, 1]
        refit += ["temperature", "threshold"]
        figures.update(
            target_sensitivity=target_sensitivity,
            sensitivity_goal_on_site_films=goal,
            base=compute_metrics(y, p_before, meta.threshold).to_dict(),
            adapted=compute_metrics(y, p, threshold).to_dict(),
        )
    else:
        temperature = meta.temperature
        p = calibrated_probabilities(after["logits"], temperature)[:, 1]
        share = float(np.mean(p_before >= meta.threshold))
        threshold = threshold_for_share(p, share)
        refit.append("threshold")
        from scipy.stats import spearmanr

        figures.update(
            share_pneumonia=share,
            share_pneumonia_adapted=float(np.mean(p >= threshold)),
            rank_correlation_with_base=float(spearmanr(p_before, p).statistic),
            decisions_changed=float(np.mean((p >= threshold) != (p_before >= meta.threshold))),
        )

    ood_tensors, ood_settings = (
        _refit_ood(after["features"], meta.ood) if "ood" in refit else (None, meta.ood)
    )
    new_meta = copy.deepcopy(meta)
    new_meta.threshold = threshold
    new_meta.temperature = temperature
    new_meta.uncertain_band = uncertain_band(threshold)
    new_meta.ood = ood_settings
    result = AdaptResult(
        base_model=str(model_dir),
        mode="labeled" if labeled else "unlabeled",
        n_films=len(records),
        refit=refit,
        threshold=threshold,
        temperature=temperature,
        figures=figures,
        skipped=sorted({str(r) for r in before["skipped"]}),
    )
    new_meta.adaptation = Adaptation(
        base_model=result.base_model,
        base_fingerprint=meta.data_fingerprint,
        mode=result.mode,
        n_films=result.n_films,
        refit=tuple(result.refit),
        figures=figures,
        source=provenance or {},
    )
    tensors = dict(extra)
    if ood_tensors is not None:
        tensors.update({k: torch.from_numpy(v) for k, v in ood_tensors.items()})
    save_model(output, adapted, new_meta, extra_tensors=tensors)
    log.info("adapted model written to %s (%s: refit %s)", output, result.mode, ", ".join(refit))
    return result


def _refit_ood(features: np.ndarray, settings: OodConfig):
    """A new OOD reference from the site's films: half as reference, half to set the cut-off
    (the same quantile and margin as the base model)."""

    rng = np.random.default_rng(0)
    order = rng.permutation(len(features))
    half = len(order) // 2
    tensors, refit = fit_ood(
        features[order[:half]],
        features[order[half:]],
        k=settings.k,
        quantile=settings.quantile,
        margin=settings.margin,
    )
    # The layout checks read pixels, not features: their tensors and cut-offs stay the base's.
    return tensors, dataclasses.replace(
        refit,
        layout_cutoff=settings.layout_cutoff,
        layout_residual_cutoff=settings.layout_residual_cutoff,
    )
