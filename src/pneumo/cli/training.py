"""`pneumo` subcommands that train and package models: train, compare, bundle, adapt, variants.
Each needs the `train` extra (torch) and says so, in one line, when it is missing."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from pneumo.cli.common import add_command, add_data_arg, add_model_arg, data_dir
from pneumo.errors import PneumoError
from pneumo.extras import require_train

# Options spelled other than ``--field-name``, or handled apart: the data root (shared with
# every command), where the run goes, the backbone (its own option per command), augmentation
# (one switch here, a table in recipes), and the two boolean fields whose flag says the opposite.
_OPTIONS_APART = frozenset(
    {"data", "output", "backbone", "augment", "resume", "pretrained", "freeze_bn"}
)


def _choices() -> dict[str, tuple[str, ...]]:
    from pneumo.training import config

    return {
        "mode": config.MODES,
        "class_balance": config.CLASS_BALANCES,
        "precision": config.TRAIN_PRECISIONS,
        "device": config.DEVICES,
        "head_init": config.HEAD_INITS,
        "select_epoch": config.SELECT_EPOCHS,
        "threshold_method": config.THRESHOLD_METHODS,
    }


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, its help the field's docstring. Every default is None
    here, so that a value given on the command line is told apart from one left out: left out,
    it comes from --config's recipe, else from TrainConfig."""
    from pneumo.training.config import MODE_DEFAULTS, TrainConfig, field_docs, option_flag

    add_data_arg(p)
    p.add_argument(
        "--config",
        type=Path,
        metavar="RECIPE.toml",
        help="a training recipe: TOML keys named like the fields behind the options below "
        "(target_sensitivity = 0.97; configs/ holds the bundled model's); options given on the "
        "command line override it",
    )
    docs, choices, default = field_docs(), _choices(), TrainConfig()
    types = {"int": int, "float": float, "str": str, "Path": Path}
    p.add_argument(
        "--output", type=Path, default=None, help="run directory (default runs/<backbone>-<mode>)"
    )
    for f in fields(TrainConfig):
        if f.name in _OPTIONS_APART:
            continue
        kind = types[str(f.type).replace(" | None", "")]
        shown = getattr(default, f.name)
        if f.name in MODE_DEFAULTS["frozen"]:
            shown = ", ".join(f"{v[f.name]:g} {m}" for m, v in MODE_DEFAULTS.items())
        help_text = docs[f.name] + (f" (default {shown})" if shown is not None else "")
        p.add_argument(
            option_flag(f.name),
            type=kind,
            choices=choices.get(f.name),
            default=None,
            help=help_text.replace("%", "%%"),
        )
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        default=None,
        help="start from random weights on purpose (" + docs["pretrained"] + ")",
    )
    p.add_argument(
        "--no-augment",
        action="store_true",
        help="fine-tune without augmentation (" + docs["augment"] + ")",
    )
    bn = p.add_mutually_exclusive_group()
    bn.add_argument(
        "--train-bn",
        dest="freeze_bn",
        action="store_false",
        default=None,
        help="fine-tune batch norm with batch statistics (the default)",
    )
    bn.add_argument(
        "--freeze-bn",
        dest="freeze_bn",
        action="store_true",
        default=None,
        help=docs["freeze_bn"].replace("%", "%%"),
    )


def config_from_args(args: argparse.Namespace, backbone: str | None = None):
    """A TrainConfig from parsed options over ``--config``'s recipe: an option given wins, then
    the recipe, then TrainConfig's defaults. ``backbone`` (compare's) wins over both."""
    from pneumo.data.augment import AugmentConfig
    from pneumo.training.config import TrainConfig, read_recipe

    recipe = read_recipe(args.config) if getattr(args, "config", None) else {}
    values = dict(recipe)
    names = {f.name for f in fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    if backbone is not None:
        values["backbone"] = backbone
    if args.no_augment:
        values["augment"] = AugmentConfig.none()
    if args.data is not None or "data" not in recipe:
        values["data"] = data_dir(args)
    cfg = TrainConfig(**{k: v for k, v in values.items() if k != "output"})
    cfg.output = args.output or Path("runs") / f"{cfg.backbone}-{cfg.mode}"
    return cfg


def _train(args: argparse.Namespace) -> int:
    require_train("`pneumo train`")
    from rich.console import Console

    from pneumo.training.train import train

    cfg = config_from_args(args, args.backbone)
    cfg.resume = bool(args.resume)
    run = train(cfg)
    Console(stderr=True).print(
        f"run written to [bold]{run.run_dir}[/bold]; model in {run.model_dir}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    require_train("`pneumo compare`")
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
    require_train("`pneumo bundle`")
    from pneumo.training.bundle import bundle_model

    bundle_model(
        args.run,
        args.dest,
        threshold_method=args.threshold_method,
        target_sensitivity=args.target_sensitivity,
        prevalence=args.prevalence,
        predictor_for=_shipped_predictor,
    )
    return 0


def _shipped_predictor(model_dir: Path):
    """The bundled model's figures come from the graph it ships, as ONNX Runtime serves it."""
    from pneumo.inference.engine import load_predictor

    return load_predictor(model_dir, backend="onnx", precision="fp32")


def _adapt(args: argparse.Namespace) -> int:
    require_train("`pneumo adapt`")
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
    require_train("`pneumo variants`")
    from rich.console import Console

    from pneumo.models.checkpoint import RunDir
    from pneumo.training.variants import compare_variants, export_variant, variants_markdown

    alphas = tuple(float(a) for a in args.alphas.split(",") if a.strip())
    if args.export:
        output = args.output or RunDir(args.run).model
        export_variant(args.run, args.export, output, alphas, args.soup)
        Console(stderr=True).print(f"{args.export!r} written to {output}")
        return 0
    rows = compare_variants(args.run, soup_runs=args.soup, alphas=alphas)
    Console().print(variants_markdown(rows))
    return 0


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.training.config import THRESHOLD_METHODS
    from pneumo.training.train import train

    p = add_command(sub, "train", train, _train)
    p.add_argument(
        "--backbone",
        default=None,
        help="registry name (see `pneumo models`; default: the recipe's, else "
        "tf_efficientnet_lite0)",
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
