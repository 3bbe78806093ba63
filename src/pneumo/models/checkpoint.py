"""A model on disk: ``model.safetensors`` (weights, no pickles) beside ``model.json`` (everything
inference needs: backbone, preprocessing, classes, threshold, temperature, provenance)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumo import CLASS_NAMES, __version__
from pneumo.errors import ModelError
from pneumo.files import atomic_path, write_atomic
from pneumo.models.preprocess import DataConfig
from pneumo.models.provenance import Adaptation, TrainingRecord
from pneumo.models.registry import create_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT = "pneumo-model/1"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
GRAPH_FILE = "model.onnx"
"""The exported graph serving runs (``pneumo.inference.export``), shipped so that serving needs
no torch; absent, it is exported from the weights on first use where torch is installed."""
FILMS_FILE = "films.json"
"""The validation and calibration films the model was made with (``pneumo.models.films``)."""
HISTORY_FILE = "history.json"
"""Per-epoch training history, in a run's folder and beside a bundled model."""


@dataclass(frozen=True)
class RunDir:
    """The folder a training run writes (``pneumo train --output``), its layout named once:
    training writes it; variants, bundle, evaluate and the CLI read it."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The run's TrainConfig and how it really ran (precision, world size, film counts)."""
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def metrics(self) -> Path:
        """Validation figures at the chosen operating point."""
        return self.root / "metrics.json"

    @property
    def head_init(self) -> Path:
        """How the head was started before fine-tuning."""
        return self.root / "head_init.json"

    @property
    def checkpoints(self) -> Path:
        """Start, last-epoch and EMA weights, for --resume and ``pneumo variants``."""
        return self.root / "checkpoints"

    @property
    def model(self) -> Path:
        """The model directory (weights, ``model.json``, films, validation predictions)."""
        return self.root / "model"

    @property
    def report(self) -> Path:
        """The validation report with its plots."""
        return self.root / "report"

    @classmethod
    def holding(cls, model_dir: str | Path) -> RunDir | None:
        """The run whose model ``model_dir`` is (``runs/NAME/model``), or None."""
        run = cls(Path(model_dir).parent)
        return run if run.model == Path(model_dir) else None


BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "default"
"""Where the bundled default model lives in a source checkout."""


DEFAULT_K = 10
"""Neighbour the out-of-distribution score measures to (``OodConfig.k``): the k-th nearest
training feature, so that a film near a handful of odd training films still scores far."""

UNCERTAIN_ODDS = 4.0
"""Films whose odds against the threshold are below 4:1 either way are 'uncertain'."""


def uncertain_band(threshold: float, odds: float = UNCERTAIN_ODDS) -> tuple[float, float]:
    """The probabilities whose odds, relative to the threshold's, are within ``odds``:1 either
    way (p 0.2-0.8 around a threshold of 0.5). Symmetric in logit space, the unit the network
    computes in, so a threshold away from 0.5 gets a band of the same meaning."""
    if odds <= 1:
        raise ValueError(f"odds must be > 1, got {odds}")
    centre, width = math.log(threshold / (1 - threshold)), math.log(odds)
    return (1 / (1 + math.exp(-(centre - width))), 1 / (1 + math.exp(-(centre + width))))


@dataclass(frozen=True)
class OodConfig:
    """How the out-of-distribution check of a model was fitted (``pneumo.models.ood``); the
    reference features themselves are stored beside the weights under ``ood.*``."""

    cutoff: float
    """Scores above this are flagged: a high validation quantile, widened by ``margin``."""
    k: int = DEFAULT_K
    """The score is the cosine distance to the k-th nearest reference feature."""
    quantile: float = 0.995
    margin: float = 1.2
    reference_size: int = 0
    """How many training features are stored as the reference."""
    method: str = "knn-cosine"
    layout_cutoff: float | None = None
    """Films whose coarse layout correlates less than this with the mean training film are
    flagged (``pneumo.models.ood.layout_vector``); None for a model without the check."""
    layout_residual_cutoff: float | None = None
    """Films whose coarse layout lies further than this from the training films' layout
    subspace are flagged (``pneumo.models.ood.layout_residuals``); None without the check."""

    @classmethod
    def from_dict(cls, d: dict) -> OodConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


FINGERPRINT_DIGITS = 8
"""Hex digits of a fingerprint shown where space is short (records, CSV, PDF)."""


def short_fingerprint(fingerprint: str, digits: int = FINGERPRINT_DIGITS) -> str:
    """``sha256:0123abcd``: the algorithm prefix, then ``digits`` hex digits of the digest (the
    prefix does not count: cutting the whole string to 8 characters left one digit)."""
    algorithm, colon, digest = fingerprint.rpartition(":")
    return f"{algorithm}{colon}{digest[:digits]}"


@dataclass
class ModelMetadata:
    """Everything that travels with the weights; serving builds its preprocessing from this."""

    backbone: str
    """timm model name from the registry."""
    data_config: DataConfig
    """Input size, mean and std."""
    class_names: tuple[str, ...] = CLASS_NAMES
    """Output order of the head; index 1 is PNEUMONIA."""
    threshold: float = 0.5
    """Decision threshold on the calibrated pneumonia probability."""
    temperature: float = 1.0
    """Logits are divided by this before the softmax (fitted on validation)."""
    uncertain_band: tuple[float, float] | None = None
    """Calibrated probabilities in this band are reported as uncertain; None (a model.json
    without one) means ``uncertain_band(threshold)``, the band training places."""
    ood: OodConfig | None = None
    """Out-of-distribution check settings; None for a model saved without them."""
    data_fingerprint: str = ""
    """Hash of the training labels and file contents."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Validation figures at the chosen threshold (``pneumo.evaluation.metrics.Metrics``
    as a dict, with intervals, margins and the logit shift beside them)."""
    training: TrainingRecord = field(default_factory=TrainingRecord)
    """Resolved training config and the variant exported (a dict is read as one)."""
    adaptation: Adaptation | None = None
    """Set by ``pneumo adapt``: base model, number of site films, what was refit, figures;
    None for a model not adapted (``{}`` in model.json)."""
    pneumo_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: str = FORMAT

    def __post_init__(self):
        if isinstance(self.data_config, dict):
            self.data_config = DataConfig.from_dict(self.data_config)
        if isinstance(self.ood, dict):
            self.ood = OodConfig.from_dict(self.ood) if self.ood else None
        if not isinstance(self.training, TrainingRecord):
            self.training = TrainingRecord.from_dict(self.training or {})
        if self.adaptation is not None and not isinstance(self.adaptation, Adaptation):
            self.adaptation = Adaptation.from_dict(self.adaptation) if self.adaptation else None
        self.class_names = tuple(self.class_names)
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.uncertain_band is None:
            self.uncertain_band = uncertain_band(self.threshold)
        self.uncertain_band = tuple(self.uncertain_band)
        if self.temperature <= 0:
            raise ModelError(f"temperature must be > 0, got {self.temperature}")

    @property
    def version(self) -> str:
        """A short, stable name of these weights for records and reports:
        ``backbone@created+sha256:0123abcd``."""
        version = f"{self.backbone}@{self.created}"
        if self.data_fingerprint:
            version += f"+{short_fingerprint(self.data_fingerprint)}"
        return version

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data_config"] = self.data_config.to_dict()
        d["training"] = self.training.to_dict()
        d["adaptation"] = self.adaptation.to_dict() if self.adaptation else {}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelMetadata:
        if d.get("format") != FORMAT:
            raise ModelError(f"unsupported model format {d.get('format')!r}, expected {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_model_dir(path: str | Path | None = None) -> Path:
    """``path``, else ``$PNEUMO_MODEL``, else the bundled default model."""
    import os

    chosen = Path(path or os.environ.get("PNEUMO_MODEL") or BUNDLED_MODEL_DIR)
    if chosen.is_file():
        chosen = chosen.parent
    if not (chosen / METADATA_FILE).is_file() or not (chosen / WEIGHTS_FILE).is_file():
        raise ModelError(
            f"{chosen}: no model here (expected {METADATA_FILE} and {WEIGHTS_FILE}); "
            "train one with `pneumo train` or pass --model DIR"
        )
    return chosen


def read_metadata(model_dir: str | Path) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    try:
        return ModelMetadata.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelError(f"{path}: model metadata not found") from None
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: corrupt model metadata ({exc})") from None


def save_model(
    model_dir: str | Path,
    model: torch.nn.Module,
    metadata: ModelMetadata,
    *,
    half: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights (fp16 with ``half``) and metadata; ``extra_tensors`` (for example the
    out-of-distribution statistics) go into the same safetensors file under their own keys."""
    import torch
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.to(torch.float16)
        tensors[f"model.{key}"] = value.contiguous()
    for key, value in (extra_tensors or {}).items():
        tensors[key] = value.detach().cpu().contiguous()  # kept in their own dtype
    # a server reading this folder sees the old model or the new one, never half a file
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_atomic(model_dir / METADATA_FILE, json.dumps(metadata.to_dict(), indent=2) + "\n")
    return model_dir


def load_tensors(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a model file; a corrupt file is a clear ModelError."""
    from safetensors.torch import load_file

    path = Path(model_dir) / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: model weights not found") from None
    except Exception as exc:
        raise ModelError(f"{path}: corrupt model weights ({exc})") from None


def load_model(model_dir: str | Path | None = None) -> tuple[torch.nn.Module, ModelMetadata, dict]:
    """Rebuild the classifier from a model directory in fp32 eval mode.

    Returns ``(model, metadata, extra_tensors)`` where ``extra_tensors`` holds non-weight
    tensors such as the out-of-distribution statistics.
    """

    model_dir = resolve_model_dir(model_dir)
    meta = read_metadata(model_dir)
    tensors = load_tensors(model_dir)
    model = create_model(
        meta.backbone, pretrained=False, num_classes=len(meta.class_names), drop_rate=0.0
    )
    state = {
        k[len("model.") :]: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith("model.")
    }
    extra = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{model_dir}: weights do not fit backbone {meta.backbone} ({exc})"
        ) from None
    model.eval()
    return model, meta, extra
