"""Typed settings for training runs; the resolved config is written next to every run and model."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pneumo.data.augment import AugmentConfig

MODES = ("frozen", "finetune")


def cache_dir() -> Path:
    """Per-machine cache (feature caches, exported ONNX): ``$PNEUMO_CACHE`` or
    ``~/.cache/pneumo``."""
    return Path(os.environ.get("PNEUMO_CACHE") or Path.home() / ".cache" / "pneumo")


PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """One training run. Defaults follow the seed (batch 32, lr 0.002, patience 3) where sound."""

    backbone: str = "tf_efficientnet_lite0"
    """Registry name of the backbone."""
    mode: str = "frozen"
    """frozen: cached backbone features + dense head (the seed's); finetune: end to end."""
    data: Path = Path("data/chest_xray")
    """Data root with {train,val,test}/{NORMAL,PNEUMONIA}/."""
    output: Path = Path("runs/latest")
    """Run directory: config, history, checkpoints, model, plots."""
    val_fraction: float = 0.15
    """Share of train patients held out for validation (patient-level, stratified)."""
    train_labels: Path | None = None
    """Optional label CSV for training (instead of carving from the train folder)."""
    val_labels: Path | None = None
    """Optional label CSV for validation (never the official test split)."""
    seed: int = 0
    """Seed for the split, initialisation, order and augmentation."""
    pretrained: bool = True
    """Start from ImageNet weights (an error, never random weights, when missing)."""
    weights: Path | None = None
    """Explicit ImageNet weights file (.safetensors)."""
    epochs: int = 3
    """Maximum number of epochs."""
    batch_size: int = 32
    """Images per optimisation step."""
    lr: float = 0.002
    """Peak learning rate of AdamW (cosine schedule with a short warm-up)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    class_balance: str = "loss"
    """loss: class-weighted loss; sampler: balanced sampling; none."""
    patience: int = 3
    """Stop after this many epochs without a better validation loss."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation (finetune mode; frozen features are computed without it)."""
    precision: str = "auto"
    """auto: bf16 autocast where this CPU runs it faster (measured at start), else fp32."""
    workers: int = 2
    """DataLoader worker processes."""
    threshold_method: str = "balanced_accuracy"
    """How the operating threshold is chosen on validation: balanced_accuracy or sensitivity."""
    target_sensitivity: float = 0.95
    """Sensitivity to reach when threshold_method is sensitivity."""
    resume: bool = False
    """Continue from the run directory's last checkpoint."""
    max_images: int | None = None
    """Use at most this many training images (quick checks and tests)."""

    def __post_init__(self):
        self.data, self.output = Path(self.data), Path(self.output)
        for name in ("train_labels", "val_labels", "weights"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.class_balance not in ("loss", "sampler", "none"):
            raise ValueError("class_balance must be loss, sampler or none")
        if self.threshold_method not in ("balanced_accuracy", "sensitivity"):
            raise ValueError("threshold_method must be balanced_accuracy or sensitivity")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 1:
            raise ValueError("epochs, batch_size, patience must be >= 1 and lr > 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, Path):
                d[key] = str(value)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
