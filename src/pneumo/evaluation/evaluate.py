"""Evaluate a saved model on a split of the data set (or the rows of a label CSV) and write the
report. Preprocessing comes from the model's own metadata, so it always matches training."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo import CLASS_NAMES
from pneumo.errors import DataError, ImageDecodeError, ModelError, PneumoError

if TYPE_CHECKING:
    import torch

    from pneumo.data.discover import ImageRecord
    from pneumo.data.transforms import DataConfig

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


def batch_logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """Preprocessed float32 batch (N, 3, H, W) -> logits (N, C): the one step an ONNX engine
    would replace."""
    import torch

    x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return model(x).float().numpy()


def _load(record: ImageRecord, config: DataConfig) -> tuple[np.ndarray | None, str | None]:
    """Decode and preprocess one image; an unreadable file gives (None, reason)."""
    from pneumo.data.decode import load_image
    from pneumo.data.transforms import preprocess

    h, w = config.input_size
    try:
        img = load_image(record.path, name=record.relpath, draft_size=(w, h))
    except ImageDecodeError as exc:
        return None, exc.reason
    return preprocess(img, config), None


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


def _records(data: Path, split: str, labels: Path | None) -> list[ImageRecord]:
    from pneumo.data.discover import find_images, find_split_dirs

    if labels is not None:
        from pneumo.data.labels import read_labels

        records = read_labels(labels, data)
        if not records:
            raise DataError(f"labels file {labels} lists no images")
        return records
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
    split: str = "test",
    labels: Path | None = None,
    output: Path,
    batch_size: int = 32,
    workers: int = 2,
) -> dict:
    """Evaluate a model on a data split and write a JSON and Markdown report with figures.

    Runs the model (default: the bundled one, or $PNEUMO_MODEL) on every image of the split
    folder (test, val or train) under the data root, or on the rows of a label CSV such as the
    patient-level validation split (then the split folder is not used). Probabilities are
    calibrated with the model's temperature and called PNEUMONIA at its threshold.

    The report gives accuracy, balanced accuracy, sensitivity, specificity, precision, F1 and
    ROC AUC with 95% bootstrap intervals resampled by patient, next to the always-PNEUMONIA
    baseline; the Markdown file beside it links the confusion matrix, ROC curve, reliability
    diagram and (when the model's run has a history.json) the training curves. Unreadable
    images are skipped with a warning and listed in the report; per-image probabilities go to
    a CSV beside it.
    """
    from pneumo.evaluation.calibration import calibrated_probabilities
    from pneumo.evaluation.report import write_report
    from pneumo.models.checkpoint import load_model, resolve_model_dir
    from pneumo.progress import progress_bar

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    output = Path(output)
    if output.suffix.lower() != ".json":
        raise PneumoError(f"{output}: the report file must end in .json")
    model_dir = resolve_model_dir(model)
    records = _records(Path(data), split, labels)
    net, meta, _ = load_model(model_dir)
    if not {"NORMAL", "PNEUMONIA"} <= set(meta.class_names):
        raise ModelError(f"{model_dir}: classes {meta.class_names} lack NORMAL or PNEUMONIA")
    pneumonia_column = meta.class_names.index("PNEUMONIA")

    import torch

    net = net.to(memory_format=torch.channels_last)
    config = meta.data_config
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    kept: list[ImageRecord] = []
    logits: list[np.ndarray] = []
    skipped: list[dict] = []
    log.info("evaluating %s on %d images (%s)", model_dir, len(records), split)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress_bar(len(records), f"evaluate {labels.stem if labels else split}") as advance,
    ):
        # Decode the next batch in the pool while the model runs on this one.
        pending = [pool.submit(_load, r, config) for r in batches[0]]
        for i, batch in enumerate(batches):
            results = [f.result() for f in pending]
            if i + 1 < len(batches):
                pending = [pool.submit(_load, r, config) for r in batches[i + 1]]
            arrays = []
            for record, (array, reason) in zip(batch, results, strict=True):
                if array is None:
                    log.warning("skipped %s: %s", record.path, reason)
                    skipped.append({"path": record.relpath, "reason": reason})
                else:
                    kept.append(record)
                    arrays.append(array)
            if arrays:
                logits.append(batch_logits(net, np.stack(arrays)))
            advance(len(batch))
    if not kept:
        raise DataError(f"none of the {len(records)} images could be read; see the warnings")

    p = calibrated_probabilities(np.concatenate(logits), meta.temperature)[:, pneumonia_column]
    y = np.array([int(r.label == "PNEUMONIA") for r in kept])
    h, w = config.input_size
    model_info = {
        "path": str(model_dir),
        "backbone": meta.backbone,
        "input_size": f"{h}x{w}",
        "temperature": meta.temperature,
        "threshold": meta.threshold,
        "data_fingerprint": meta.data_fingerprint,
        "created": meta.created,
    }
    predictions = [
        {
            "path": r.relpath,
            "patient": r.patient,
            "label": r.label,
            "probability": float(prob),
            "predicted": CLASS_NAMES[int(prob >= meta.threshold)],
        }
        for r, prob in zip(kept, p, strict=True)
    ]
    return write_report(
        output,
        y_true=y,
        p=p,
        threshold=meta.threshold,
        groups=[r.patient for r in kept],
        history=find_history(model_dir),
        model_info=model_info,
        split=labels.stem if labels is not None else split,
        skipped=skipped,
        predictions=predictions,
    )
