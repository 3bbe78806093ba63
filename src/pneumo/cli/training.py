"""`pneumo` subcommands: train, compare."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from pneumo.cli.common import add_command, add_data_arg, data_dir


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from pneumo.config import TrainConfig

    add_data_arg(p)
    d = TrainConfig()
    p.add_argument(
        "--mode",
        choices=["frozen", "finetune"],
        default=d.mode,
        help="frozen: cached features + dense head (the seed's); finetune: end to end",
    )
    p.add_argument(
        "--output", type=Path, default=None, help="run directory (default runs/<backbone>-<mode>)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of train patients held out for validation",
    )
    p.add_argument(
        "--train-labels", type=Path, help="label CSV to train on (from `pneumo data labels`)"
    )
    p.add_argument(
        "--val-labels", type=Path, help="label CSV to validate on (never the test split)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="start from random weights on purpose",
    )
    p.add_argument("--weights", type=Path, help="ImageNet weights file (.safetensors)")
    p.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default 3 frozen, 8 finetune)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 0.002 frozen, 0.0005 finetune)",
    )
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--label-smoothing", type=float, default=None, help="default 0 frozen, 0.1 finetune"
    )
    p.add_argument("--class-balance", choices=["loss", "sampler", "none"], default=d.class_balance)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--no-augment", action="store_true", help="fine-tune without augmentation")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument(
        "--threshold-method",
        choices=["balanced_accuracy", "sensitivity"],
        default=d.threshold_method,
    )
    p.add_argument("--target-sensitivity", type=float, default=d.target_sensitivity)
    p.add_argument(
        "--max-images", type=int, help="train on at most this many images (quick checks)"
    )


def config_from_args(args: argparse.Namespace, backbone: str):
    """A TrainConfig from parsed options, with the mode-dependent defaults filled in."""
    from pneumo.config import TrainConfig
    from pneumo.data.augment import AugmentConfig

    finetune = args.mode == "finetune"
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(
        backbone=backbone,
        data=data_dir(args),
        epochs=args.epochs or (8 if finetune else 3),
        lr=args.lr or (5e-4 if finetune else 0.002),
        label_smoothing=args.label_smoothing
        if args.label_smoothing is not None
        else (0.1 if finetune else 0.0),
        augment=AugmentConfig.none() if args.no_augment else AugmentConfig(),
        output=args.output or Path("runs") / f"{backbone}-{args.mode}",
    )
    return TrainConfig(**values)


def _train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pneumo.training.train import train

    cfg = config_from_args(args, args.backbone)
    cfg.resume = args.resume
    run_dir = train(cfg)
    Console(stderr=True).print(
        f"run written to [bold]{run_dir}[/bold]; model in {run_dir / 'model'}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pneumo.training.compare import compare

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    base = config_from_args(args, backbones[0])
    compare(
        base, backbones, output=args.output or Path("runs/compare"), retrain=not args.no_retrain
    )
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from pneumo.training.bundle import bundle_model

    bundle_model(args.run, args.dest)
    return 0


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.training.train import train

    p = add_command(sub, "train", train, _train)
    p.add_argument(
        "--backbone", default="tf_efficientnet_lite0", help="registry name (see `pneumo models`)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output from its last checkpoint",
    )
    _add_train_options(p)

    from pneumo.training.compare import compare

    p = add_command(sub, "compare", compare, _compare)
    p.add_argument(
        "--backbones",
        default="densenet121,resnet50,tf_efficientnet_lite0",
        help="comma-separated registry names",
    )
    p.add_argument(
        "--no-retrain", action="store_true", help="skip retraining the winner on train + validation"
    )
    _add_train_options(p)

    from pneumo.training.bundle import bundle_model

    p = add_command(sub, "bundle", bundle_model, _bundle)
    p.add_argument("run", type=Path, help="run directory written by `pneumo train`")
    p.add_argument(
        "--dest", type=Path, default=Path("models/default"), help="where to write the model"
    )
