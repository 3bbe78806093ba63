"""What ``pneumo models`` shows: each model, the engine it runs on here, and the accuracy
guard's figures that decide its precision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import PneumoError
from pneumo.inference.guard import GuardReport


@dataclass
class ModelSummary:
    """One model folder as this machine would serve it."""

    path: Path
    backbone: str
    input_size: tuple[int, int]
    threshold: float
    uncertain_band: tuple[float, float]
    validation_roc_auc: float | None
    backend: str
    """The engine ``auto`` resolves to here."""
    guard: GuardReport | None
    """The cached accuracy guard report, if the guard ran."""
    guard_problem: str | None = None
    """Why the guard cannot run here (asked when it has not run, or by ``check``)."""


def model_dirs(paths: list[str | Path] | None = None) -> list[Path]:
    """``paths``, else $PNEUMO_MODEL and every model folder beside the bundled one."""
    import os

    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR, METADATA_FILE

    if paths:
        return [Path(p) for p in paths]
    found = sorted(p.parent for p in BUNDLED_MODEL_DIR.parent.glob(f"*/{METADATA_FILE}"))
    extra = os.environ.get("PNEUMO_MODEL")
    if extra and Path(extra).resolve() not in {p.resolve() for p in found}:
        found.insert(0, Path(extra))
    return found


def summarize(model_dir: str | Path, *, check: bool = False) -> ModelSummary:
    """Describe one model; ``check`` runs the accuracy guard now (OpenVINO only)."""
    from pneumo.inference.engine import resolve_backend
    from pneumo.models.checkpoint import read_metadata, resolve_model_dir

    model_dir = resolve_model_dir(model_dir)
    meta = read_metadata(model_dir)
    backend = resolve_backend("auto")
    guard, problem = None, None
    if backend == "openvino":
        from pneumo.inference.guard import guard_obstacle, read_guard, run_guard
        from pneumo.models.films import read_films

        report = read_guard(model_dir)
        if report is None and not check:
            problem = guard_obstacle(model_dir)
        if check:
            try:
                films = read_films(model_dir)
                report = run_guard(
                    model_dir, films.validation, films.calibration, split=films.split
                )
            except PneumoError as exc:
                problem = str(exc)
        guard = report
    metrics = meta.metrics if isinstance(meta.metrics, dict) else {}
    return ModelSummary(
        path=model_dir,
        backbone=meta.backbone,
        input_size=tuple(meta.data_config.input_size),
        threshold=meta.threshold,
        uncertain_band=tuple(meta.uncertain_band),
        validation_roc_auc=metrics.get("roc_auc"),
        backend=backend,
        guard=guard,
        guard_problem=problem,
    )


def format_summary(s: ModelSummary) -> str:
    """A few plain lines and, when the guard ran, its table."""
    h, w = s.input_size
    lo, hi = s.uncertain_band
    auc = "n/a" if s.validation_roc_auc is None else f"{s.validation_roc_auc:.4f}"
    lines = [
        f"{s.path}",
        f"  {s.backbone}, {w}x{h}, threshold {s.threshold:.3f}, uncertain band "
        f"{lo:.2f}-{hi:.2f}, validation ROC-AUC {auc}",
    ]
    if s.backend != "openvino":
        lines.append(f"  engine here: {s.backend}, fp32 (reduced precision needs OpenVINO)")
        return "\n".join(lines)
    g = s.guard
    if g is None and s.guard_problem:
        lines.append(
            "  engine here: openvino fp32; bf16 and int8 need the accuracy guard, which cannot "
            f"run here: {s.guard_problem}"
        )
        return "\n".join(lines)
    if g is None:
        lines.append(
            "  engine here: openvino; accuracy guard not run yet: it runs on first use, or now "
            "with --check"
        )
        return "\n".join(lines)
    limits = g.limits
    lines += [
        f"  engine here: openvino {g.chosen} (precision auto)",
        f"  accuracy guard on the {g.split}, {g.created}: ROC-AUC within "
        f"{limits['max_auc_change']}, at most {limits['max_flip_share']:.1%} of decisions "
        "flipped, every flip inside the uncertain band",
        "    precision  ROC-AUC  change   flips          outside band  max |dp|  img/s  verdict",
        f"    {'fp32':<10} {g.roc_auc_fp32:.4f}  {'-':<8} {'-':<14} {'-':<13} {'-':<9}"
        f" {g.fp32_images_per_s or 0:>5.0f}  reference",
    ]
    for v in g.verdicts.values():
        verdict = (
            "within limits (auto serves it only in a cascade)"
            if v.passed
            else "refused: " + "; ".join(v.reasons)
        )
        flips = f"{v.flips} ({v.flip_share:.2%})"
        lines.append(
            f"    {v.precision:<10} {v.roc_auc:.4f}  {v.roc_auc - g.roc_auc_fp32:<+8.4f}"
            f" {flips:<14} {v.flips_outside_band:<13} {v.max_probability_change:<9.3f}"
            f" {v.images_per_s or 0:>5.0f}  {verdict}"
        )
    for v in g.verdicts.values():
        c = v.cascade
        if c is None:
            continue
        verdict = "passed" if c.passed else "not used: " + "; ".join(c.reasons or ["refused"])
        lines.append(
            f"    {c.precision:<10} fp32 again for {c.rerun_share:.1%} of films (within "
            f"{c.log_odds_margin:.3f} log-odds of an edge: {limits.get('recheck_safety', 2.0):g} x "
            f"the {c.log_odds_error:.3f} measured), {c.changed_decisions} decisions changed, "
            f"about {c.images_per_s or 0:.0f} img/s  {verdict}"
        )
    if s.guard_problem:
        lines.append(f"  (--check could not run again: {s.guard_problem})")
    return "\n".join(lines)


def describe_models(
    paths: list[str | Path] | None = None, *, check: bool = False
) -> list[ModelSummary]:
    """Show the models here and how this machine runs them: backbone, input size, threshold,
    the engine `auto` picks, and the accuracy guard's figures (validation ROC-AUC change,
    decisions flipped, flips outside the uncertain band, speed) that decide whether bf16 or
    int8 is used instead of fp32.

    MODEL folders default to $PNEUMO_MODEL and every folder beside the bundled model. The guard
    runs on a model's first use on this machine; --check runs it again now.
    """
    return [summarize(p, check=check) for p in model_dirs(paths)]
