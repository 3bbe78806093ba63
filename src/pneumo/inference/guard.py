"""The accuracy guard for reduced precision, on the model's own validation split. It judges
bf16 and int8 alone against fp32 (ROC-AUC, decisions flipped), and measures for each the error
that sets the cascade's margins (``pneumo.inference.cascade``: the fast precision for every
film, fp32 again near a decision edge), the share of films re-run and the decisions changed,
which must be none. ``precision="auto"`` serves such a cascade when this CPU runs its fast
precision natively and it re-runs at most a quarter of the films, else fp32: never a precision
that changes a decision, and never a choice made by a timing (replicas must agree). The
figures are computed once per machine and model, written beside the cached IR
(``<sha256>.v2.guard-r2-b2-g2.json``) and shown by ``pneumo models`` and ``GET /v1/model``."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.errors import PneumoError

if TYPE_CHECKING:
    from pneumo.data.discover import ImageRecord
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

REDUCED = ("int8", "bf16")
"""Reduced precisions the guard judges, fastest first (AMX int8, then AMX bf16)."""
_CHUNK = 64
MAX_RERUN_SHARE = 0.25
"""A cascade that runs more than this share of the validation films again at fp32 is refused:
its fp32 re-runs would eat most of what the fast precision saves (bf16 runs the bundled network
about 1.9x fp32's rate here, so a quarter re-run leaves about 1.3x before decoding)."""
GUARD_RULE = "2"
"""Bumped when how the guard chooses changes (2: by this CPU's native support and the share
re-run, never by a timing), so reports chosen by the old rule are not reused."""


@dataclass(frozen=True)
class GuardLimits:
    """How close to fp32 a reduced precision must stay on validation to be used."""

    max_auc_change: float = 0.002
    """Largest allowed |ROC-AUC - fp32 ROC-AUC|."""
    max_flip_share: float = 0.005
    """Largest share of films whose decision differs from fp32's."""
    flips_in_band: bool = True
    """Every flipped decision must have both probabilities inside the uncertain band."""
    max_probability_change: float | None = None
    """Optional cap on the largest probability change (None: not checked)."""
    recheck_safety: float = 2.0
    """The cascade's margin is this many times the largest change measured on validation."""

    def __post_init__(self):
        if not self.recheck_safety >= 1.0:
            raise ValueError(f"recheck_safety must be >= 1, got {self.recheck_safety}")


@dataclass
class CascadeVerdict:
    """The cascade over one fast precision, replayed on the validation films."""

    precision: str
    """Its name, ``bf16+fp32``: what ``precision="auto"`` loads when chosen."""
    log_odds_error: float
    """Largest |fast - fp32| calibrated log-odds among films that could cross an edge."""
    log_odds_margin: float
    """``recheck_safety`` x that: films whose fast log-odds lie this near the threshold or a
    band end run again at fp32."""
    ood_error: float | None
    """Largest |fast - fp32| feature distance near the OOD cut-off (None: no cut-off)."""
    ood_margin: float | None
    """The same margin around the OOD cut-off."""
    rerun_share: float
    """Share of validation films run again at fp32."""
    changed_decisions: int
    """Validation films whose label, uncertain flag or OOD flag differ from fp32's (0 by
    construction: the margin is at least the largest change measured on them)."""
    images_per_s: float | None = None
    """Estimated: films / (fast seconds + re-run share x fp32 seconds), network alone. Shown,
    not used to choose: a timing on a busy machine varies from run to run."""
    passed: bool = False
    """No decision changed, the CPU runs the fast precision natively, and at most
    ``MAX_RERUN_SHARE`` of the films run again."""
    reasons: list[str] = field(default_factory=list)
    """Why it was refused (empty when it passed)."""


@dataclass
class Verdict:
    """One reduced precision against fp32 on the same films."""

    precision: str
    roc_auc: float
    auc_change: float
    flips: int
    flip_share: float
    flips_outside_band: int
    max_probability_change: float
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Which limits it broke (empty when it passed)."""
    images_per_s: float | None = None
    """Forward passes alone, in the same run as fp32's figure."""
    cascade: CascadeVerdict | None = None
    """This precision with fp32 re-runs near the decision edges."""


@dataclass
class GuardReport:
    """What the guard measured and chose for one model on this machine."""

    chosen: str
    """The precision ``precision="auto"`` loads: the first cascade (``REDUCED`` order) that passed
    (``bf16+fp32``), else fp32."""
    split: str
    """Which films were judged (the validation split's description)."""
    n: int
    roc_auc_fp32: float
    fp32_images_per_s: float | None
    limits: dict
    verdicts: dict[str, Verdict]
    created: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GuardReport:
        verdicts = {}
        for k, v in d.get("verdicts", {}).items():
            cascade = v.get("cascade")
            verdicts[k] = Verdict(
                **{**v, "cascade": None if cascade is None else CascadeVerdict(**cascade)}
            )
        return cls(**{**d, "verdicts": verdicts})


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The project's one ROC-AUC; NaN when the films hold one class only (which fails the
    guard: NaN compares false)."""
    from pneumo.evaluation.metrics import roc_auc as shared_roc_auc

    auc = shared_roc_auc(np.asarray(y).astype(int), p)
    return float("nan") if auc is None else auc


def judge(
    precision: str,
    y: np.ndarray,
    p_fp32: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    band: tuple[float, float],
    limits: GuardLimits,
) -> Verdict:
    """Compare one precision's probabilities with fp32's on the same labelled films."""
    auc32, auc = roc_auc(y, p_fp32), roc_auc(y, p)
    flipped = (p_fp32 >= threshold) != (p >= threshold)
    lo, hi = band
    in_band = (p_fp32 >= lo) & (p_fp32 <= hi) & (p >= lo) & (p <= hi)
    outside = int((flipped & ~in_band).sum())
    change = float(np.abs(p - p_fp32).max()) if len(p) else 0.0
    v = Verdict(
        precision=precision,
        roc_auc=auc,
        auc_change=abs(auc - auc32),
        flips=int(flipped.sum()),
        flip_share=float(flipped.mean()) if len(p) else 0.0,
        flips_outside_band=outside,
        max_probability_change=change,
        passed=True,
    )
    if np.isnan(auc32):
        v.reasons.append("ROC-AUC undefined: the validation films hold one class only")
    elif not v.auc_change <= limits.max_auc_change:  # NaN fails too
        v.reasons.append(f"ROC-AUC moved {v.auc_change:.4f} > {limits.max_auc_change}")
    if v.flip_share > limits.max_flip_share:
        v.reasons.append(f"{v.flips} decisions flipped ({v.flip_share:.2%})")
    if limits.flips_in_band and outside:
        v.reasons.append(f"{outside} flipped decisions outside the uncertain band")
    if limits.max_probability_change is not None and change > limits.max_probability_change:
        v.reasons.append(f"probability moved up to {change:.4f}")
    v.passed = not v.reasons
    return v


def judge_cascade(
    precision: str,
    logits32: np.ndarray,
    logits: np.ndarray,
    scores32: np.ndarray | None,
    scores: np.ndarray | None,
    meta: ModelMetadata,
    *,
    safety: float,
) -> CascadeVerdict:
    """Measure the fast precision's error near the decision edges, set the cascade's margins
    from it and replay the cascade on the same films."""
    from pneumo.inference.cascade import (
        Margins,
        cascade_name,
        decision_edges,
        log_odds,
        measured_error,
        replay,
    )

    z32, z = log_odds(logits32, meta.temperature), log_odds(logits, meta.temperature)
    z_error = measured_error(z, z32, decision_edges(meta), safety)
    cutoff = meta.ood.cutoff if meta.ood else None
    ood_error = None
    if cutoff is not None and scores is not None and scores32 is not None:
        ood_error = measured_error(scores, scores32, [cutoff], safety)
    margins = Margins(safety * z_error, None if ood_error is None else safety * ood_error)
    again, changed = replay(logits32, logits, scores32, scores, meta, margins)
    return CascadeVerdict(
        precision=cascade_name(precision),
        log_odds_error=z_error,
        log_odds_margin=margins.log_odds,
        ood_error=ood_error,
        ood_margin=margins.ood,
        rerun_share=float(again.mean()) if len(again) else 0.0,
        changed_decisions=int(changed.sum()),
    )


def guard_path(model_dir: str | Path) -> Path:
    """The report beside the cached IR of ``model_dir``."""
    from pneumo.inference.openvino_backend import BF16_RECIPE, INT8_RECIPE, cached_ir_path

    recipes = f"r{INT8_RECIPE}-b{BF16_RECIPE}-g{GUARD_RULE}"
    return cached_ir_path(model_dir).with_suffix(f".guard-{recipes}.json")


def read_guard(model_dir: str | Path) -> GuardReport | None:
    """The cached report, or None when the guard has not run here (or the file is damaged)."""
    path = guard_path(model_dir)
    try:
        return GuardReport.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring an unreadable precision guard report %s (%s)", path, exc)
        return None


def _decoded_chunks(predictor, records, size: int = _CHUNK):
    """(arrays, labels) of ``records`` ``size`` at a time, prepared by the model's film
    pipeline; unreadable films are left out."""
    prepare = predictor.pipeline.prepare
    with ThreadPoolExecutor(predictor.decode_workers) as pool:
        for start in range(0, len(records), size):
            chunk = records[start : start + size]
            films = list(pool.map(lambda r: prepare(r.path, str(r.path)), chunk))
            keep = [i for i, f in enumerate(films) if f.error is None]
            if keep:
                yield (
                    np.stack([films[i].array for i in keep]),
                    np.array([chunk[i].label_index for i in keep]),
                )


def run_guard(
    model_dir: str | Path,
    validation: list[ImageRecord],
    calibration: list[ImageRecord],
    *,
    limits: GuardLimits | None = None,
    precisions: tuple[str, ...] = REDUCED,
    split: str = "validation",
    threads: int | None = None,
) -> GuardReport:
    """Judge each reduced precision against fp32 on ``validation`` (int8 is first calibrated on
    ``calibration``), choose a cascade that passes (``chosen_cascade``), and write the report
    to the cache."""
    from pneumo.inference.engine import read_ood_tensors
    from pneumo.inference.openvino_backend import OpenVinoPredictor, ensure_ir
    from pneumo.inference.quantize import ensure_int8_ir
    from pneumo.models.checkpoint import read_metadata

    limits = limits or GuardLimits()
    meta = read_metadata(model_dir)
    # with the OOD statistics: the cascade's margin at the OOD cut-off needs the scores
    ood = read_ood_tensors(model_dir)
    fp32 = OpenVinoPredictor(ensure_ir(model_dir), meta, ood, precision="fp32", threads=threads)
    candidates = {"fp32": fp32}
    for precision in precisions:
        try:
            xml = ensure_int8_ir(model_dir, calibration) if precision == "int8" else fp32.model_path
        except PneumoError as exc:  # e.g. no calibration film readable: judge the others
            log.warning("%s left out of the accuracy guard: %s", precision, exc)
            continue
        candidates[precision] = OpenVinoPredictor(xml, meta, precision=precision, threads=threads)
    outputs: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {k: [] for k in candidates}
    seconds = dict.fromkeys(candidates, 0.0)
    labels = []
    for arrays, y in _decoded_chunks(fp32, validation):
        labels.append(y)
        for name, predictor in candidates.items():
            start = time.perf_counter()
            logits, features = predictor.forward(arrays)
            seconds[name] += time.perf_counter() - start
            outputs[name].append((logits, fp32.ood_score(features)))
    if not labels:
        raise PneumoError("no validation film could be read")
    y = np.concatenate(labels)

    def joined(name: str) -> tuple[np.ndarray, np.ndarray | None]:
        logits = np.concatenate([lg for lg, _ in outputs[name]])
        scores = [s for _, s in outputs[name]]
        return logits, None if scores[0] is None else np.concatenate(scores)

    logits32, scores32 = joined("fp32")
    p32 = fp32.probabilities(logits32)
    auc32 = roc_auc(y, p32)

    def speed(name: str) -> float:
        return round(len(y) / seconds[name], 1) if seconds[name] > 0 else 0.0

    verdicts = {}
    for precision in [p for p in precisions if p in candidates]:
        logits, scores = joined(precision)
        v = judge(
            precision,
            y,
            p32,
            fp32.probabilities(logits),
            threshold=meta.threshold,
            band=tuple(meta.uncertain_band),
            limits=limits,
        )
        v.images_per_s = speed(precision)
        c = judge_cascade(
            precision, logits32, logits, scores32, scores, meta, safety=limits.recheck_safety
        )
        spent = seconds[precision] + c.rerun_share * seconds["fp32"]
        c.images_per_s = round(len(y) / spent, 1) if spent > 0 else 0.0
        c.reasons = cascade_refusals(c, native=runs_natively(precision), one_class=np.isnan(auc32))
        c.passed = not c.reasons
        v.cascade = c
        verdicts[precision] = v
    report = GuardReport(
        chosen=chosen_cascade(verdicts),
        split=f"{split} ({len(y)} films)",
        n=len(y),
        roc_auc_fp32=auc32,
        fp32_images_per_s=speed("fp32"),
        limits=asdict(limits),
        verdicts=verdicts,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_json(guard_path(model_dir), report.to_dict())
    for v in verdicts.values():
        c = v.cascade
        log.info(
            "%s against fp32 on %d validation films: ROC-AUC %+.4f, %d flips, %s; %s re-runs "
            "%.1f%% at fp32 (log-odds margin %.3f), %d decisions changed, about %.0f img/s",
            v.precision,
            len(y),
            v.roc_auc - report.roc_auc_fp32,
            v.flips,
            "passed" if v.passed else "; ".join(v.reasons),
            c.precision,
            100 * c.rerun_share,
            c.log_odds_margin,
            c.changed_decisions,
            c.images_per_s,
        )
    return report


def cascade_refusals(c: CascadeVerdict, *, native: bool, one_class: bool) -> list[str]:
    """Why cascade ``c`` may not be served (empty: it may). Nothing here is a timing, so every
    replica of a service on the same kind of machine chooses the same precision."""
    from pneumo.inference.cascade import fast_precision

    reasons = []
    if c.changed_decisions:
        reasons.append(f"{c.changed_decisions} validation decisions changed")
    if one_class:  # films of one class measure the error on half the cases a clinic sends
        reasons.append("the validation films hold one class only")
    if not native:
        reasons.append(f"this CPU has no native {fast_precision(c.precision)} instructions")
    if c.rerun_share > MAX_RERUN_SHARE:
        reasons.append(f"{c.rerun_share:.0%} of films re-run at fp32 (limit {MAX_RERUN_SHARE:.0%})")
    return reasons


def runs_natively(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin lists ``precision`` among this CPU's capabilities (BF16:
    AVX512-BF16 or AMX; without them bf16 is emulated or runs as fp32). INT8 is listed on every
    x86 CPU: int8's cascade is held back by its accuracy instead (the bundled Lite2 moves by
    4-5 log-odds in int8, so nearly every film would run again)."""
    import openvino as ov

    try:
        listed = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - unknown here: treated as not native, said once
        log.warning("OpenVINO does not list this CPU's capabilities (%s): fp32 only", exc)
        return precision == "fp32"
    return precision.upper() in {str(c).upper() for c in listed}


def chosen_cascade(verdicts: dict[str, Verdict]) -> str:
    """The first cascade in ``REDUCED`` order (fastest kind first: int8, then bf16) that passed,
    else fp32. bf16 or int8 alone is never chosen: alone, they may change a decision."""
    for precision in REDUCED:
        verdict = verdicts.get(precision)
        if verdict is not None and verdict.cascade is not None and verdict.cascade.passed:
            return verdict.cascade.precision
    return "fp32"


def cascade_verdict(report: GuardReport, name: str) -> CascadeVerdict | None:
    """The report's figures for cascade ``name`` (``bf16+fp32``), if it measured them."""
    from pneumo.inference.cascade import fast_precision

    verdict = report.verdicts.get(fast_precision(name) or "")
    return None if verdict is None else verdict.cascade


def served_precision(report: GuardReport) -> str:
    """What ``auto`` serves from a cached report: its choice only when that precision (or
    cascade) passed (a hand-edited or damaged report naming a refused one gets fp32)."""
    verdict = report.verdicts.get(report.chosen)
    cascade = cascade_verdict(report, report.chosen)
    if (
        report.chosen == "fp32"
        or (verdict is not None and verdict.passed)
        or (cascade is not None and cascade.passed and cascade.changed_decisions == 0)
    ):
        return report.chosen
    log.warning(
        "fp32: the cached accuracy guard report chose %s, which it did not pass", report.chosen
    )
    return "fp32"


def unavailable_path(model_dir: str | Path) -> Path:
    """The note of why the guard cannot run here (so the reason is said once, not every use)."""
    return guard_path(model_dir).with_suffix(".unavailable")


def guard_obstacle(model_dir: str | Path) -> str | None:
    """Why the guard cannot run for ``model_dir`` here (its validation films are not found, or
    it lists none), or None when it can."""
    from pneumo.models.films import read_films

    try:
        read_films(model_dir)
    except PneumoError as exc:
        return str(exc)
    return None


def _say_once(model_dir: str | Path, reason: str) -> None:
    """Log why the guard cannot run at INFO the first time on this machine (and whenever the
    reason changes), at DEBUG after that: every `predict` and each `serve` process asks."""
    note = unavailable_path(model_dir)
    try:
        known = note.read_text() == reason
    except OSError:
        known = False
    message = "precision fp32: the accuracy guard that allows bf16 and int8 cannot run: %s"
    if known:
        log.debug(message, reason)
        return
    log.info(message + " (said once; `pneumo models` shows it)", reason)
    with contextlib.suppress(OSError):  # a read-only cache: said each time rather than fail
        _write_text(note, reason)


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=1) + "\n")


def _write_text(path: Path, text: str) -> None:
    from pneumo.files import write_atomic

    write_atomic(path, text)


def guarded_precision(model_dir: str | Path, *, threads: int | None = None) -> str:
    """The precision ``auto`` means for ``model_dir`` on this machine: the cached guard's choice;
    without one, the guard runs now (once, other processes wait for it) when the validation
    split can be found, else fp32."""
    report = read_guard(model_dir)
    if report is not None:
        return served_precision(report)
    import fcntl

    from pneumo.models.films import read_films

    lock_path = guard_path(model_dir).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = read_guard(model_dir)  # another process may have finished it meanwhile
        if report is not None:
            return served_precision(report)
        try:
            films = read_films(model_dir)
        except PneumoError as exc:
            _say_once(model_dir, str(exc))
            return "fp32"
        unavailable_path(model_dir).unlink(missing_ok=True)
        log.info(
            "first use on this machine: checking bf16 and int8 against fp32 on %d validation "
            "films (once; the result is cached)",
            len(films.validation),
        )
        try:
            report = run_guard(
                model_dir, films.validation, films.calibration, split=films.split, threads=threads
            )
        except PneumoError as exc:
            log.warning("precision fp32: the accuracy guard failed: %s", exc)
            return "fp32"
        return served_precision(report)
