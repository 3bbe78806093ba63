"""Evaluate a saved model on a split of the data set (or the rows of a label CSV) and write the
report. Preprocessing comes from the model's own metadata, so it always matches training."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo import CLASS_NAMES
from pneumo.data.discover import find_images, find_split_dirs, folder_records
from pneumo.data.labels import read_labels
from pneumo.errors import DataError, ModelError, PneumoError
from pneumo.evaluation.report import write_report
from pneumo.evaluation.stress import stress_test, write_stress_report
from pneumo.inference.engine import load_predictor
from pneumo.models.checkpoint import HISTORY_FILE, RunDir, resolve_model_dir
from pneumo.progress import progress_bar

if TYPE_CHECKING:
    from pneumo.data.discover import ImageRecord

log = logging.getLogger(__name__)

SPLITS = ("auto", "test", "validation", "val", "train")
"""What ``--split`` takes. auto: the official test split when the data root has one, else
validation; validation: the model's own patient-level validation films, rebuilt from its
training record (its threshold was placed on them); val: the official 16-film val folder."""
SPLIT_NAMES = {
    "validation": "validation (the model's patient-level validation split, where its threshold "
    "was placed: optimistic)",
}
"""How a split is named in the report where its folder name alone would mislead."""
REPORTS = Path("runs")
"""Where reports go by default: ``runs/eval-<model>-<split>/report.json`` (runs/ is where
training writes too, and git ignores it)."""


def find_history(model_dir: Path) -> list[dict] | None:
    """The training history beside the model or in its run folder (``runs/NAME/model`` ->
    ``runs/NAME/history.json``); None when there is none or it cannot be read."""
    for path in (model_dir / HISTORY_FILE, model_dir.parent / HISTORY_FILE):
        if not path.is_file():
            continue
        try:
            history = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring %s: not readable JSON (%s)", path, exc)
            continue
        if isinstance(history, list) and history and all(isinstance(r, dict) for r in history):
            return history
        log.warning("ignoring %s: expected a non-empty list of per-epoch objects", path)
    return None


def resolve_split(split: str, data: Path) -> str:
    """``auto``: test when the data root has a test folder (the shared copy does not), else the
    model's validation films; any other choice as given."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split != "auto":
        return split
    return "test" if "test" in find_split_dirs(data) else "validation"


def default_output(model_dir: Path, name: str) -> Path:
    """``runs/eval-<model>-<name>/report.json``; a run's model (``runs/NAME/model``) is called
    NAME, the bundled one "bundled"."""
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    model_dir = Path(model_dir)
    run = RunDir.holding(model_dir)
    model = run.root.name if run else model_dir.name
    if model_dir.resolve() == BUNDLED_MODEL_DIR.resolve():
        model = "bundled"
    return REPORTS / f"eval-{model}-{name}" / "report.json"


def _records(
    data: Path,
    split: str,
    labels: Path | None,
    images: Path | None = None,
    model_dir: Path | None = None,
) -> list[ImageRecord]:

    if images is not None:
        records, labeled = folder_records(images)
        if not labeled:
            raise DataError(f"{images}: evaluation needs NORMAL/ and PNEUMONIA/ subfolders")
        if not records:
            raise DataError(f"{images}: no images in NORMAL/ or PNEUMONIA/")
        return records
    if labels is not None:
        records = read_labels(labels, data)
        if not records:
            raise DataError(f"labels file {labels} lists no images")
        return records
    if split == "validation":
        from pneumo.models.films import read_films

        try:
            return read_films(model_dir, data).validation
        except PneumoError as exc:
            raise DataError(f"cannot evaluate {model_dir} on its validation split: {exc}") from None
    dirs = find_split_dirs(data)
    if split not in dirs:
        # find_images would say the same; checked here so the message never depends on it.
        data_root = next(iter(dirs.values())).parent
        raise DataError(
            f"split {split!r} not found: expected folder {data_root / split} "
            f"with NORMAL/ and PNEUMONIA/ inside"
        )
    return find_images(data, [split])


def evaluate(
    *,
    model: Path | None = None,
    data: Path,
    split: str = "auto",
    labels: Path | None = None,
    images: Path | None = None,
    output: Path | None = None,
    batch_size: int = 32,
    workers: int = 2,
    stress: bool = False,
    seed: int = 0,
) -> dict:
    """Evaluate a model on a data split and write a JSON and Markdown report with figures.

    Runs the model (default: the bundled one, or $PNEUMO_MODEL) on every image of a split, on
    the rows of a label CSV, or on any folder with NORMAL/ and PNEUMONIA/ subfolders (--images,
    such as a site's own films). Splits: test, val (the official 16 films) or train folders
    under the data root, or validation: the model's own patient-level validation films, rebuilt
    from its training record (its threshold was placed on them, so the figures are optimistic).
    The default, auto, takes the official test split when the data root has one, else
    validation; nothing is ever selected on what is evaluated. Probabilities are calibrated
    with the model's temperature and called PNEUMONIA at its threshold.

    The report goes to --output, by default runs/eval-<model>-<split>/report.json (the bundled
    model is called "bundled", a run's model by its run folder).

    The report gives accuracy, balanced accuracy, sensitivity, specificity, precision, F1 and
    ROC AUC with 95% bootstrap intervals resampled by patient, next to the always-PNEUMONIA
    baseline; the Markdown file beside it links the confusion matrix, ROC curve, reliability
    diagram and (when the model's run has a history.json) the training curves. Unreadable
    images are skipped with a warning and listed in the report; per-image probabilities go to
    a CSV beside it.

    With --stress it also runs a seeded battery of acquisition shifts (exposure, contrast, blur,
    compression, noise, resolution, positioning) and reports the figures per shift and per
    subgroup (NORMAL series, bacterial or viral) in NAME.stress.json and .md: a check of a model
    on a site's own films, not a way to select models.
    """

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    model_dir = resolve_model_dir(model)
    if images is None and labels is None:
        chosen = resolve_split(split, Path(data))
        if split == "auto" and chosen != "test":
            log.info("no test/ folder under %s: evaluating the model's validation split", data)
        split = chosen
    key = images.name if images is not None else (labels.stem if labels is not None else split)
    output = Path(output) if output is not None else default_output(model_dir, key)
    if output.suffix.lower() != ".json":
        raise PneumoError(f"{output}: the report file must end in .json")
    records = _records(Path(data), split, labels, images, model_dir)
    name = SPLIT_NAMES.get(key, key) if images is None and labels is None else key
    # The torch backend of the serving engine: the same decoding, preprocessing and calibration
    # as `predict`, `serve` and the app, without an ONNX export for a one-off evaluation.
    predictor = load_predictor(model_dir, backend="torch", batch_size=batch_size)
    predictor.decode_workers = workers
    meta = predictor.metadata
    if tuple(meta.class_names) != CLASS_NAMES:
        raise ModelError(f"{model_dir}: classes {meta.class_names}, expected {CLASS_NAMES}")
    log.info("evaluating %s on %d images (%s)", model_dir, len(records), name)
    kept, p, skipped = _classify(predictor, records, name)
    if stress:
        _stress(predictor, kept, model_dir, name, output, seed)
    report = write_report(
        output,
        y_true=np.array([int(r.label == "PNEUMONIA") for r in kept]),
        p=p,
        threshold=meta.threshold,
        groups=[r.patient for r in kept],
        history=find_history(model_dir),
        model_info=_model_info(model_dir, meta),
        split=name,
        skipped=skipped,
        predictions=_prediction_rows(kept, p, meta.threshold),
    )
    return {**report, "path": str(output)}  # where it went, for the caller to say


def _classify(predictor, records: list[ImageRecord], name: str):
    """Calibrated probabilities of the readable films; the others listed with their reason."""

    with progress_bar(len(records), f"evaluate {name}") as advance:
        preds = predictor.predict_sources(
            [r.path for r in records], [r.relpath for r in records], progress=advance
        )
    kept: list[ImageRecord] = []
    probabilities: list[float] = []
    skipped: list[dict] = []
    for record, pred in zip(records, preds, strict=True):
        if pred.error is not None:
            reason = pred.error.removeprefix(f"{record.relpath}: ")
            log.warning("skipped %s: %s", record.path, reason)
            skipped.append({"path": record.relpath, "reason": reason})
        else:
            kept.append(record)
            probabilities.append(pred.model_probability)  # every film, flagged or not
    if not kept:
        raise DataError(f"none of the {len(records)} images could be read; see the warnings")
    return kept, np.asarray(probabilities), skipped


def _model_info(model_dir: Path, meta) -> dict:
    h, w = meta.data_config.input_size
    return {
        "path": str(model_dir),
        "backbone": meta.backbone,
        "input_size": f"{h}x{w}",
        "temperature": meta.temperature,
        "threshold": meta.threshold,
        "data_fingerprint": meta.data_fingerprint,
        "created": meta.created,
    }


def _prediction_rows(kept: list[ImageRecord], p: np.ndarray, threshold: float) -> list[dict]:
    return [
        {
            "path": r.relpath,
            "patient": r.patient,
            "label": r.label,
            "probability": float(prob),
            "predicted": CLASS_NAMES[int(prob >= threshold)],
        }
        for r, prob in zip(kept, p, strict=True)
    ]


def _stress(predictor, kept, model_dir: Path, name: str, output: Path, seed: int) -> None:

    with progress_bar(len(kept), "stress test") as advance:
        battery = stress_test(predictor, kept, seed=seed, advance=advance)
    battery["model"] = str(model_dir)
    battery["split"] = name
    write_stress_report(battery, output.with_suffix(".stress.json"))
