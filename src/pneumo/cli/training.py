"""`pneumo` subcommands: train, compare."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from pneumo.cli.common import add_command, add_data_arg, add_model_arg, data_dir
from pneumo.errors import PneumoError


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from pneumo.config import (
        CLASS_BALANCES,
        DEVICES,
        HEAD_INITS,
        MODE_DEFAULTS,
        MODES,
        PRECISIONS,
        SELECT_EPOCHS,
        THRESHOLD_METHODS,
        TrainConfig,
    )

    add_data_arg(p)
    d = TrainConfig()
    p.add_argument(
        "--mode",
        choices=MODES,
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
        "--split-seed", type=int, default=None, help="seed of the validation split (default --seed)"
    )
    p.add_argument(
        "--start-weights",
        type=Path,
        default=None,
        help="fine-tune from another run's checkpoints/start.safetensors (runs to soup)",
    )
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="start from random weights on purpose",
    )
    p.add_argument("--weights", type=Path, help="ImageNet weights file (.safetensors)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="maximum epochs (default "
        + ", ".join(f"{v['epochs']} {m}" for m, v in MODE_DEFAULTS.items())
        + ")",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default "
        + ", ".join(f"{v['lr']:g} {m}" for m, v in MODE_DEFAULTS.items())
        + ")",
    )
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--label-smoothing", type=float, default=None, help="cross-entropy label smoothing"
    )
    p.add_argument("--class-balance", choices=CLASS_BALANCES, default=d.class_balance)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--no-augment", action="store_true", help="fine-tune without augmentation")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument(
        "--device", choices=DEVICES, default=d.device, help="cpu, or cuda on a GPU machine"
    )
    p.add_argument(
        "--head-init",
        choices=HEAD_INITS,
        default=d.head_init,
        help="fine-tuning's starting head: zero (default), a linear probe on frozen features "
        "(LP-FT, with --freeze-bn), random",
    )
    p.add_argument(
        "--freeze-stages",
        type=int,
        default=d.freeze_stages,
        help="keep the stem and this many early stages at ImageNet weights (faster epochs)",
    )
    bn = p.add_mutually_exclusive_group()
    bn.add_argument(
        "--train-bn",
        dest="freeze_bn",
        action="store_false",
        default=d.freeze_bn,
        help="fine-tune batch norm with batch statistics (the default)",
    )
    bn.add_argument(
        "--freeze-bn",
        dest="freeze_bn",
        action="store_true",
        help="keep batch-norm statistics frozen (what LP-FT, --head-init probe, wants)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=d.ema_decay,
        help="ship an EMA of the fine-tuned weights with this decay (0: off)",
    )
    p.add_argument(
        "--wise-alpha",
        type=float,
        default=d.wise_alpha,
        help="WiSE-FT: share of fine-tuned weights mixed with the starting ones (1: none)",
    )
    p.add_argument(
        "--select-epoch",
        choices=SELECT_EPOCHS,
        default=d.select_epoch,
        help="ship the last epoch (default) or the one with the lowest validation loss",
    )
    p.add_argument(
        "--threshold-method",
        choices=THRESHOLD_METHODS,
        default=d.threshold_method,
        help="sensitivity: the highest threshold reaching --target-sensitivity on validation; "
        "bayes: p = 0.5 on the balanced posterior, moved to --prevalence by Bayes' rule",
    )
    p.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="expected share of pneumonia where deployed (moves the bayes threshold)",
    )
    p.add_argument("--target-sensitivity", type=float, default=d.target_sensitivity)
    p.add_argument(
        "--max-images", type=int, help="train on at most this many images (quick checks)"
    )


def config_from_args(args: argparse.Namespace, backbone: str):
    """A TrainConfig from parsed options; options left out take TrainConfig's defaults."""
    from pneumo.config import TrainConfig
    from pneumo.data.augment import AugmentConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(
        backbone=backbone,
        data=data_dir(args),
        augment=AugmentConfig.none() if args.no_augment else AugmentConfig(),
        output=args.output or Path("runs") / f"{backbone}-{args.mode}",
    )
    return TrainConfig(**values)


def _train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pneumo.training.train import train

    cfg = config_from_args(args, args.backbone)
    cfg.resume = args.resume
    run = train(cfg)
    Console(stderr=True).print(
        f"run written to [bold]{run.run_dir}[/bold]; model in {run.model_dir}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pneumo.training.compare import compare

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    base = config_from_args(args, backbones[0])
    output = args.output or Path("runs/compare")
    summary = compare(base, backbones, output=output, retrain=not args.no_retrain)
    if summary["winner"] is None:
        raise PneumoError(
            f"no backbone could be trained; the reasons are in {output}/comparison.md"
        )
    sys.stderr.write(f"winner: {summary['winner']}; comparison in {output}/comparison.md\n")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from pneumo.training.bundle import bundle_model

    bundle_model(
        args.run,
        args.dest,
        threshold_method=args.threshold_method,
        target_sensitivity=args.target_sensitivity,
        prevalence=args.prevalence,
    )
    return 0


def _adapt(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from pneumo.training.adapt import adapt

    common = dict(target_sensitivity=args.target_sensitivity, workers=args.workers)
    if args.from_records:
        from pneumo.training.site_records import adapt_from_records

        result = adapt_from_records(
            db=args.from_records, output=args.output, model=args.model, films=args.films, **common
        )
    else:
        result = adapt(model=args.model, images=args.images, output=args.output, **common)
    console = Console(stderr=True)
    console.print(
        f"{result.mode} adaptation on {result.n_films} films: refit {', '.join(result.refit)}; "
        f"threshold {result.threshold:.3f}, temperature {result.temperature:.3f}"
    )
    console.print(json.dumps(result.figures, indent=1, default=float))
    console.print(f"adapted model written to [bold]{args.output}[/bold]; serve it with --model")
    return 0


def _variants(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pneumo.training.variants import compare_variants, export_variant, variants_markdown

    alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
    if args.export:
        export_variant(args.run, args.export, args.output or args.run / "model", alphas, args.soup)
        Console(stderr=True).print(
            f"{args.export!r} written to {args.output or args.run / 'model'}"
        )
        return 0
    rows = compare_variants(args.run, soup_runs=args.soup, alphas=alphas)
    Console().print(variants_markdown(rows))
    return 0


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.config import THRESHOLD_METHODS
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
    p.add_argument(
        "--threshold-method",
        choices=THRESHOLD_METHODS,
        default=None,
        help="place the operating point again by this rule (default: the run's own)",
    )
    p.add_argument("--target-sensitivity", type=float, default=None)
    p.add_argument("--prevalence", type=float, default=None)

    from pneumo.training.adapt import adapt

    p = add_command(sub, "adapt", adapt, _adapt)
    add_model_arg(p, "base model folder")
    site = p.add_mutually_exclusive_group(required=True)
    site.add_argument(
        "--images",
        type=Path,
        help="the site's films: a flat folder (unlabeled) or NORMAL/ and PNEUMONIA/ subfolders",
    )
    site.add_argument(
        "--from-records",
        metavar="DB",
        help="the app's records database (SQLite file or URL): the films clinicians reviewed, "
        "labeled by their finding",
    )
    p.add_argument(
        "--films",
        help="with --from-records: the app's film store (folder or 'database'; default "
        "$PNEUMO_FILMS or films/ beside a SQLite file)",
    )
    p.add_argument("--output", type=Path, required=True, help="folder for the adapted model")
    p.add_argument(
        "--target-sensitivity",
        type=float,
        default=0.95,
        help="labeled films: sensitivity the threshold must keep on new films (default 0.95)",
    )
    p.add_argument("--workers", type=int, default=2, help="image decoding processes")

    from pneumo.training.variants import compare_variants

    p = add_command(sub, "variants", compare_variants, _variants)
    p.add_argument("run", type=Path, help="fine-tuning run directory")
    p.add_argument(
        "--soup", type=Path, nargs="*", default=[], help="other runs from the same start to soup"
    )
    p.add_argument("--alphas", default="0.5,0.75", help="WiSE-FT mixes to compare")
    p.add_argument("--export", help="write this variant (by its name in the table) as a model")
    p.add_argument("--output", type=Path, help="where --export writes (default RUN/model)")
