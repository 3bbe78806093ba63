"""Reduced precision that changes no decision: every film runs at the fast precision (bf16 or
int8), and the films whose fast answer lies too near a decision edge run again at fp32.

A decision has three edges: the threshold (label), the two ends of the uncertain band (the
uncertain flag) and the out-of-distribution cut-off on the feature distance (diagnosed or not).
"Too near" means within the accuracy guard's margin: ``safety`` times the largest change the
fast precision made, measured on the model's validation films (``pneumo.inference.guard``).
Probabilities are compared as log-odds, where the fast precision's error is about the same size
at every edge (a probability change depends on how steep the sigmoid is there)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pneumo.inference.predictor import Predictor

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

SAFETY = 2.0
"""Margin = SAFETY x the largest change measured on validation: an unseen film may move further
than the worst validation film did (re-running 12-15% of films instead of about 11%, measured
for the bundled model in bf16)."""


CASCADE_BATCH_SIZE = 16
"""Films per forward pass of a cascade when none is asked for (plain precisions: 8). bf16 on
AMX runs more films a second with 8 on each of the two streams than with 4 (the network 3.72
against 3.90 ms a film); `pneumo predict` on 624 films ran 1.40-1.42x fp32 at 16 against
1.34-1.40x at 8, for about 230 MiB more at its peak (625 against 397 MiB). fp32 is fastest at
8."""


def cascade_name(fast: str) -> str:
    """The precision name of the cascade over ``fast`` (``bf16+fp32``)."""
    return f"{fast}+fp32"


def fast_precision(name: str) -> str | None:
    """``bf16`` for ``bf16+fp32``; None for a plain precision."""
    fast, plus, rest = name.partition("+")
    return fast if plus and rest == "fp32" else None


def log_odds(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated log-odds of PNEUMONIA per row: the decisions' probability is its sigmoid."""
    logits = np.asarray(logits, dtype=np.float64)
    return (logits[:, 1] - logits[:, 0]) / temperature


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def decision_edges(meta: ModelMetadata) -> np.ndarray:
    """The threshold and the uncertain band's ends, as log-odds."""
    lo, hi = meta.uncertain_band
    return np.array([_logit(lo), _logit(meta.threshold), _logit(hi)])


def near_edges(values: np.ndarray, edges, margin: float) -> np.ndarray:
    """Which ``values`` lie within ``margin`` of any of ``edges`` (bool per value)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.atleast_1d(np.asarray(edges, dtype=np.float64))
    if values.size == 0 or edges.size == 0:
        return np.zeros(values.shape, dtype=bool)
    return (np.abs(values[:, None] - edges[None, :]) <= margin).any(axis=1)


def measured_error(fast: np.ndarray, ref: np.ndarray, edges, safety: float = SAFETY) -> float:
    """The largest |fast - ref| among the films that could change side of an edge under the
    margin it sets: those whose reference value lies within ``safety`` x that error of an edge.
    A film farther away would need more than ``safety`` times the worst change seen near the
    edges to cross. Found from above: start from the largest change of all films, keep the
    films within ``safety`` x it of an edge, take their largest change, and repeat until it
    holds still. The fast precision's error grows with the size of the value (bf16 rounds
    relative to it), so confident films far from every edge would otherwise set the margin for
    the films that matter (bundled Lite2, bf16: 0.62 over all validation films, 0.35 within
    twice that of an edge, 0.23 at the fixed point: 6.7% of films re-run instead of 9.5%)."""
    fast, ref = np.asarray(fast, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if fast.size == 0:
        return 0.0
    error = np.abs(fast - ref)
    current = float(error.max())
    while True:
        near = near_edges(ref, edges, safety * current)
        found = float(error[near].max()) if near.any() else 0.0
        if found >= current:  # never grows: the films in reach only shrink with the margin
            return current
        current = found


@dataclass(frozen=True)
class Margins:
    """How near an edge a fast answer may lie before fp32 decides instead."""

    log_odds: float
    """On the calibrated log-odds of PNEUMONIA (threshold and band ends)."""
    ood: float | None
    """On the feature distance (the OOD cut-off); None when the model has no cut-off."""


def rerun_mask(
    z_fast: np.ndarray,
    ood_fast: np.ndarray | None,
    meta: ModelMetadata,
    margins: Margins,
) -> np.ndarray:
    """Films whose fast answer is too near an edge for its decision to be trusted."""
    mask = near_edges(z_fast, decision_edges(meta), margins.log_odds)
    cutoff = meta.ood.cutoff if meta.ood else None
    if ood_fast is not None and cutoff is not None and margins.ood is not None:
        mask |= near_edges(ood_fast, [cutoff], margins.ood)
    return mask


def decisions(logits: np.ndarray, scores: np.ndarray | None, meta: ModelMetadata) -> np.ndarray:
    """(label, uncertain, OOD by feature distance) per film, as ``Predictor.postprocess``
    decides them."""
    from pneumo.models.outputs import temperature_softmax

    p = temperature_softmax(logits, meta.temperature)[:, 1]
    lo, hi = meta.uncertain_band
    cutoff = meta.ood.cutoff if meta.ood else None
    far = np.zeros(len(p), bool) if scores is None or cutoff is None else scores > cutoff
    return np.stack([p >= meta.threshold, (p >= lo) & (p <= hi), far], axis=1)


def replay(
    logits32: np.ndarray,
    logits: np.ndarray,
    scores32: np.ndarray | None,
    scores: np.ndarray | None,
    meta: ModelMetadata,
    margins: Margins,
) -> tuple[np.ndarray, np.ndarray]:
    """(re-run, changed) per film: which films the cascade would run again at fp32 given the
    fast precision's outputs, and whose served decision would then differ from fp32's."""
    again = rerun_mask(log_odds(logits, meta.temperature), scores, meta, margins)
    served = np.where(again[:, None], logits32, logits)
    served_scores = None if scores is None else np.where(again, scores32, scores)
    changed = (decisions(served, served_scores, meta) != decisions(logits32, scores32, meta)).any(1)
    return again, changed


class CascadePredictor(Predictor):
    """``fast`` for every film, ``exact`` (fp32) again for the films ``rerun_mask`` picks (or the
    fast predictor's own ``forward_again``, which reuses its fp32 head). The
    labels, uncertain flags and OOD flags are fp32's; probabilities of the films not re-run are
    the fast precision's (within the guard's measured error of fp32's)."""

    def __init__(
        self, fast: Predictor, exact: Predictor | Callable[[], Predictor], margins: Margins
    ):
        """``exact`` may be a function that makes it: then it is made on first need (a
        heatmap, or a fast predictor without ``forward_again``), not at every start."""
        super().__init__(
            fast.metadata,
            fast.ood_tensors,
            threads=fast.threads,
            batch_size=fast.batch_size,
            precision=cascade_name(fast.precision),
        )
        self.backend = fast.backend
        self.fast, self.margins = fast, margins
        self._exact, self._making = exact, threading.Lock()
        self.decode_workers = fast.decode_workers
        self._count = threading.Lock()
        self.films = 0
        """Films this predictor ran, and of those ``rerun`` ran again at fp32."""
        self.rerun = 0

    @property
    def exact(self) -> Predictor:
        """The fp32 predictor (made now if it was given as a function)."""
        with self._making:
            if not isinstance(self._exact, Predictor):
                self._exact = self._exact()
            return self._exact

    def _rerun(self, logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        z = log_odds(logits, self.metadata.temperature)
        mask = rerun_mask(z, self.ood_score(features), self.metadata, self.margins)
        with self._count:
            self.films += len(mask)
            self.rerun += int(mask.sum())
        return np.flatnonzero(mask)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.fast.forward(batch)
        again = self._rerun(logits, features)
        if again.size:
            exact = self.fast.forward_again(again) or self.exact.forward(batch[again])
            logits[again], features[again] = exact
        return logits, features

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At fp32 throughout: heatmaps are asked for apart from the decisions, and bf16 moves
        them (on 32 real films: Pearson r down to 0.99, the hottest cell elsewhere on 4)."""
        return self.exact.forward_maps(batch)
