"""One training run, frozen or fine-tuned, from config to a run directory:
``config.json``, ``history.json``, ``checkpoints/``, ``model/`` and a validation report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pneumo.cache import cache_dir
from pneumo.errors import PneumoError
from pneumo.evaluation.report import write_report
from pneumo.models.checkpoint import RunDir
from pneumo.models.registry import create_model, data_config, get_spec
from pneumo.training.config import TrainConfig
from pneumo.training.run_records import fingerprint, training_records
from pneumo.training.runtime import choose_precision, init_distributed

if TYPE_CHECKING:
    import numpy as np

    from pneumo.models.provenance import Variant
    from pneumo.training.finalize import Selection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFacts:
    """What ``config.json`` records of a run beyond its TrainConfig: how it really ran."""

    resolved_precision: str = "fp32"
    weights_source: str = "an unrecorded source"
    world_size: int = 1
    n_train: int = 0
    n_val: int = 0

    @classmethod
    def read(cls, run_dir: Path) -> RunFacts:
        import json

        recorded = json.loads(RunDir(run_dir).config.read_text())
        return cls(**{k: recorded[k] for k in cls.__dataclass_fields__ if k in recorded})


@dataclass(frozen=True)
class RunResult:
    """What a training run produced, for callers that go on with it (compare, the CLI)."""

    run_dir: Path
    history: list[dict]
    """One row per epoch: train and validation loss, accuracy, ROC-AUC..."""
    selection: Selection | None
    """The operating point chosen on validation; None on torchrun ranks other than 0."""

    @property
    def model_dir(self) -> Path:
        return RunDir(self.run_dir).model

    @property
    def best_epoch(self) -> int:
        """The epoch with the lowest validation loss (how long to retrain on everything)."""
        return int(min(self.history, key=lambda h: h["val_loss"])["epoch"])


class ValidationPass(NamedTuple):
    """The network's outputs on the validation films that could be read."""

    logits: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    records: list
    """The films these rows are, in order (unreadable ones left out)."""


@dataclass(frozen=True)
class Trained:
    """What a training mode hands on to be calibrated and written (on rank 0)."""

    model: Any
    history: list[dict]
    validation: ValidationPass
    ood_train: np.ndarray
    """Features of the training films the out-of-distribution check measures against."""
    train_recs: list
    """The training films that could be read."""


def run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run recorded in its folder."""
    import json

    return TrainConfig.from_dict(json.loads(RunDir(run_dir).config.read_text()))


def ood_reference_features(model, records, data_config, cfg: TrainConfig):
    """Pooled features of a seeded sample of up to 1200 training images, for the OOD check."""
    import numpy as np

    from pneumo.data.dataset import make_loader
    from pneumo.training.loops import predict_loader
    from pneumo.training.transforms import image_dataset

    rng = np.random.default_rng(cfg.seed)
    picked = sorted(rng.choice(len(records), min(1200, len(records)), replace=False))
    loader = make_loader(
        image_dataset([records[i] for i in picked], data_config), batch_size=64, workers=cfg.workers
    )
    return predict_loader(model, loader)["features"]


def film_layouts(records) -> np.ndarray:
    """The coarse layout (``pneumo.models.ood.layout_vector``) of each readable film, for
    the layout check of the OOD flag."""
    import numpy as np

    from pneumo.data.decode import load_grey
    from pneumo.errors import ImageDecodeError
    from pneumo.models.ood import layout_vector

    out = []
    for record in records:
        try:
            out.append(layout_vector(load_grey(record.path)))
        except ImageDecodeError:
            continue  # reported where the film is used; one bad file changes no template
    return np.stack(out)


def layout_reference(train_recs, val_recs, cfg: TrainConfig) -> tuple:
    """Layouts of a seeded sample of up to 1200 training films and of the validation films."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed)
    picked = sorted(rng.choice(len(train_recs), min(1200, len(train_recs)), replace=False))
    return film_layouts([train_recs[i] for i in picked]), film_layouts(val_recs)


def train(cfg: TrainConfig) -> RunResult:
    """Train a classifier (frozen features + head, or fine-tuned) and write its run directory.

    The run directory holds config.json, history.json, checkpoints/ (for --resume), model/
    (weights, metadata, calibration, threshold) and a validation report with plots.
    Validation is a patient-level split of train; the official test split is never used.
    """
    import torch

    torch.manual_seed(cfg.seed)
    dist = init_distributed()
    train_recs, val_recs = training_records(cfg)
    model = _backbone(cfg)
    dcfg = data_config(model)
    precision = _precision(cfg, model, dcfg, dist)
    if dist.is_main:
        _write_config(cfg, model, dcfg, precision, len(train_recs), len(val_recs), dist)
    log.info(
        "%s %s: %d train / %d validation images, %s",
        cfg.mode,
        cfg.backbone,
        len(train_recs),
        len(val_recs),
        precision,
    )
    train_fn = _train_frozen if cfg.mode == "frozen" else _train_finetune
    trained = train_fn(cfg, model, dcfg, train_recs, val_recs, precision, dist)
    if trained is None:  # a torchrun rank other than 0: rank 0 writes the run
        return RunResult(Path(cfg.output), [], None)
    v = trained.validation
    selection = write_outputs(
        cfg,
        trained.model,
        dcfg,
        trained.train_recs,
        v.records,
        trained.history,
        (v.logits, v.labels, v.features),
        trained.ood_train,
    )
    return RunResult(Path(cfg.output), trained.history, selection)


def _backbone(cfg: TrainConfig):
    """The backbone with its ImageNet weights (or the given ones) on the chosen device."""
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise PneumoError("--device cuda: no CUDA GPU is available on this machine")
    model = create_model(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights)
    return model.to(cfg.device)


def _precision(cfg: TrainConfig, model, dcfg, dist) -> str:

    if cfg.mode == "frozen" and cfg.precision == "auto":
        # The head must see the features serving computes (fp32): a head trained on bf16
        # features lost 2 points of validation sensitivity when served in fp32.
        return "fp32"
    return choose_precision(
        cfg.precision,
        model,
        dcfg.input_size,
        prefer_bf16=get_spec(cfg.backbone).bf16_training,
        device=cfg.device,
        dist=dist,
    )


def _write_config(cfg: TrainConfig, model, dcfg, precision, n_train, n_val, dist) -> None:
    from pneumo.training.finalize import write_json

    write_json(
        RunDir(cfg.output).config,
        {
            **cfg.to_dict(),
            "resolved_precision": precision,
            "weights_source": getattr(model, "weights_source", "unknown"),
            "data_config": dcfg.to_dict(),
            "n_train": n_train,
            "n_val": n_val,
            "world_size": dist.world_size,
        },
    )


def _train_frozen(cfg: TrainConfig, model, dcfg, train_recs, val_recs, precision, dist):
    """A dense head on cached backbone features; the validation logits come from the head."""
    import torch

    from pneumo.training.features import cached_features, model_key
    from pneumo.training.head import train_head

    kwargs = dict(
        cache_dir=cache_dir() / "features",
        key=model_key(cfg.backbone, model, dcfg, precision),
        bf16=precision == "bf16",
        workers=cfg.workers,
    )
    train_x, train_y, train_recs = cached_features(model, train_recs, dcfg, **kwargs)
    val_x, val_y, val_recs = cached_features(model, val_recs, dcfg, **kwargs)
    head = model.get_classifier()
    history = train_head(cfg, head, train_x, train_y, val_x, val_y)
    if not dist.is_main:
        return None
    with torch.no_grad():
        val_logits = head(torch.from_numpy(val_x).to(cfg.device)).cpu().numpy()
    return Trained(
        model, history, ValidationPass(val_logits, val_y, val_x, val_recs), train_x, train_recs
    )


def _train_finetune(cfg: TrainConfig, model, dcfg, train_recs, val_recs, precision, dist):
    """A sound start (linear probe, or another run's start), then end-to-end fine-tuning."""
    from pneumo.training.finalize import write_json
    from pneumo.training.finetune import finetune
    from pneumo.training.probe import init_head, load_start

    # A resumed run restores its weights from the checkpoint; under torchrun rank 0 fits
    # the head and DistributedDataParallel hands its weights and statistics to the others.
    if not cfg.resume and dist.is_main:
        if cfg.start_weights is not None:
            head_info = load_start(model, cfg.start_weights)
        else:
            head_info = init_head(cfg, model, dcfg, train_recs, val_recs)
        write_json(RunDir(cfg.output).head_init, head_info)
    model, history = finetune(
        cfg, model, dcfg, train_recs, val_recs, precision=precision, dist=dist
    )
    if not dist.is_main:
        return None
    validation = validation_pass(model, val_recs, dcfg, cfg)
    ood_train = ood_reference_features(model, train_recs, dcfg, cfg)
    return Trained(model, history, validation, ood_train, train_recs)


def validation_pass(model, val_recs, dcfg, cfg: TrainConfig) -> ValidationPass:
    """Logits, labels and features of the validation films, and the records that were read."""
    from pneumo.data.dataset import make_loader
    from pneumo.training.loops import predict_loader
    from pneumo.training.transforms import image_dataset

    val_out = predict_loader(
        model, make_loader(image_dataset(val_recs, dcfg), batch_size=64, workers=cfg.workers)
    )
    by_path = {str(r.path): r for r in val_recs}
    kept = [by_path[p] for p in val_out["paths"]]
    return ValidationPass(val_out["logits"], val_out["labels"], val_out["features"], kept)


def write_outputs(
    cfg: TrainConfig,
    model,
    dcfg,
    train_recs,
    val_recs,
    history: list[dict],
    validation: tuple,
    ood_train,
    *,
    output=None,
    variant: Variant | None = None,
) -> Selection:
    """Calibrate, choose the threshold, and write the model, history, metrics and validation
    report of a run (``output`` overrides where the model goes; ``variant`` is recorded in its
    metadata)."""
    import numpy as np

    from pneumo.training.batchnorm import batchnorm_statistics
    from pneumo.training.finalize import (
        VAL_PREDICTIONS,
        calibrate_and_select,
        write_json,
        write_model,
        write_val_predictions,
    )
    from pneumo.training.loops import clean_batches

    run = RunDir(cfg.output)
    val_logits, val_y, val_x = validation
    train_prevalence = float(np.mean([r.label_index for r in train_recs]))
    selection = calibrate_and_select(cfg, val_logits, val_y, train_prevalence)
    model_dir = Path(output or run.model)
    write_model(
        cfg,
        model,
        dcfg,
        selection=selection,
        train_features=ood_train,
        val_features=val_x,
        fingerprint=fingerprint(train_recs),
        layouts=layout_reference(train_recs, val_recs, cfg),
        output=model_dir,
        bn_reference=batchnorm_statistics(model, clean_batches(train_recs, dcfg, cfg)),
        variant=variant,
        films=(train_recs, val_recs),
    )
    write_val_predictions(
        model_dir / VAL_PREDICTIONS, val_recs, val_logits, val_y, train_prevalence
    )
    write_json(run.history, history)
    write_json(run.metrics, selection.summary())

    write_report(
        run.report / "validation.json",
        y_true=val_y,
        p=selection.p,
        threshold=selection.threshold,
        groups=[r.patient for r in val_recs],
        history=history,
        model_info={"backbone": cfg.backbone, "run": str(run.root)},
        split="validation (patient-level, from train)",
    )
    return selection
