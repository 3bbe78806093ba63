"""Typed settings for training runs, and recipes (TOML files of them); the resolved config is
written next to every run and model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pneumo.data.augment import AugmentConfig

MODES = ("frozen", "finetune")


TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
CLASS_BALANCES = ("loss", "sampler", "none")
# What each mode trains best with when the caller does not say: a dense head on cached
# features takes a large rate; end-to-end fine-tuning a small one, for longer.
MODE_DEFAULTS = {
    "frozen": {"epochs": 3, "lr": 0.002},
    "finetune": {"epochs": 8, "lr": 1e-4},
}
HEAD_INITS = ("probe", "zero", "random")
DEVICES = ("cpu", "cuda")
THRESHOLD_METHODS = ("bayes", "sensitivity", "balanced_accuracy")
SELECT_EPOCHS = ("last", "best")
_CHOICES = {
    "device": DEVICES,
    "precision": TRAIN_PRECISIONS,
    "class_balance": CLASS_BALANCES,
    "threshold_method": THRESHOLD_METHODS,
    "head_init": HEAD_INITS,
    "select_epoch": SELECT_EPOCHS,
}
"""The settings that take one of a few named values, checked on construction."""


@dataclass
class TrainConfig:
    """One training run. Defaults follow the seed (batch 32, patience 3) where sound; epochs and
    learning rate default by mode (MODE_DEFAULTS), the same for the CLI and Python callers."""

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
    """Seed for initialisation, order and augmentation (and the split, unless split_seed)."""
    split_seed: int | None = None
    """Seed of the validation split when it must stay fixed across seeds (model soups)."""
    start_weights: Path | None = None
    """Fine-tuning starts from this state (another run's checkpoints/start.safetensors) instead
    of ImageNet weights and its own probe, so that runs share one start and can be souped."""
    pretrained: bool = True
    """Start from ImageNet weights (an error, never random weights, when missing)."""
    weights: Path | None = None
    """Explicit ImageNet weights file (.safetensors)."""
    epochs: int | None = None
    """Maximum number of epochs (None: the mode's default, MODE_DEFAULTS)."""
    batch_size: int = 32
    """Images per optimisation step."""
    lr: float | None = None
    """Peak learning rate of AdamW, cosine schedule with a short warm-up (None: the mode's
    default, MODE_DEFAULTS)."""
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
    device: str = "cpu"
    """cpu, or cuda for a GPU (the same code; for sweeps on a lent GPU machine)."""
    head_init: str = "zero"
    """Fine-tuning's starting head: zero (the default: measured on held-out films, a zero head
    with trained batch norm ranked them better than LP-FT), probe (a linear probe fitted on the
    frozen features first, LP-FT), or random (timm's init, whose large first logits damage
    pretrained features)."""
    freeze_stages: int = 0
    """Fine-tuning keeps the stem and this many early feature stages at ImageNet's weights."""
    freeze_bn: bool = False
    """Fine-tuning keeps batch-norm in eval mode (True, with running statistics re-estimated on
    training films first, as LP-FT wants), or trains it with batch statistics (False, the
    default: +0.011 held-out ROC-AUC for Lite0 across seeds; docs/robustness.md)."""
    ema_decay: float = 0.998
    """Fine-tuning ships an EMA of the weights with this decay (0 turns it off)."""
    wise_alpha: float = 1.0
    """WiSE-FT: ship (1 - alpha) * start + alpha * fine-tuned weights (1 = fine-tuned only)."""
    select_epoch: str = "last"
    """Which fine-tuning epoch ships: last (with EMA, the principled choice) or best (lowest
    validation loss; validation carved from train is near-separable, so this is mostly noise)."""
    threshold_method: str = "sensitivity"
    """sensitivity (default): the highest threshold reaching --target-sensitivity on validation
    after a shift and temperature fitted there; bayes: p = 0.5 on the class-balanced posterior,
    moved by Bayes' rule to --prevalence; balanced_accuracy: the middle of validation's best
    balanced-accuracy plateau (unstable)."""
    prevalence: float | None = None
    """Expected share of pneumonia where the model is deployed (bayes threshold); None means
    balanced errors (p = 0.5)."""
    target_sensitivity: float = 0.97
    """Sensitivity to reach on validation when threshold_method is sensitivity (a missed
    pneumonia costs more than a second look at a healthy child)."""
    resume: bool = False
    """Continue from the run directory's last checkpoint."""
    max_images: int | None = None
    """Use at most this many training images (quick checks and tests)."""

    def __post_init__(self):
        self.data, self.output = Path(self.data), Path(self.output)
        for name in ("train_labels", "val_labels", "weights", "start_weights"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name, choices in _CHOICES.items():
            if (value := getattr(self, name)) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ValueError(f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        if not 0 <= self.wise_alpha <= 1:
            raise ValueError(f"wise_alpha must be in [0, 1], got {self.wise_alpha}")
        if self.freeze_stages < 0:
            raise ValueError(f"freeze_stages must be >= 0, got {self.freeze_stages}")
        if self.prevalence is not None and not 0 < self.prevalence < 1:
            raise ValueError(f"prevalence must be in (0, 1), got {self.prevalence}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError("target_sensitivity must be in (0, 1]")
        for name, flag in (
            ("epochs", "--epochs"),
            ("batch_size", "--batch-size"),
            ("patience", "--patience"),
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
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


# Fields a recipe file may not set: where a run writes and whether it resumes belong to the
# command line of one run, not to the recipe shared between runs.
NOT_IN_RECIPES = frozenset({"output", "resume"})


def read_recipe(path: str | Path) -> dict:
    """The TrainConfig fields a recipe file (TOML, top-level keys named like the fields, an
    ``[augment]`` table for augmentation) sets. Unknown or run-only keys are refused with their
    names, so a typo never trains with a silent default."""
    import tomllib

    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the recipe {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a valid TOML recipe: {exc}") from None
    names = {f.name for f in fields(TrainConfig)} - NOT_IN_RECIPES
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{path}: unknown recipe key(s) {', '.join(unknown)}; a recipe sets TrainConfig "
            f"fields: {', '.join(sorted(names))}"
        )
    if isinstance(values.get("augment"), dict):
        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(values["augment"]) - known)
        if unknown:
            raise ValueError(f"{path}: unknown [augment] key(s) {', '.join(unknown)}")
    return values


def field_docs(cls: type = TrainConfig) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), whitespace collapsed:
    the one text that documents a setting, shown by ``pneumo train --help`` too."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def option_flag(name: str) -> str:
    """The command-line option of a TrainConfig field: ``target_sensitivity`` ->
    ``--target-sensitivity``."""
    return "--" + name.replace("_", "-")
