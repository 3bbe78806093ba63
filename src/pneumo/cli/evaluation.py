"""`pneumo` subcommands: evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumo.cli.common import add_command, add_data_arg, add_model_arg, data_dir
from pneumo.evaluation.evaluate import SPLITS, evaluate


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _json_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != ".json":
        raise argparse.ArgumentTypeError(f"{text}: the report file must end in .json")
    return path


def _summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from pneumo.evaluation.metrics import RATE_METRICS
    from pneumo.evaluation.report import LABELS, format_interval, format_value

    base = report["baseline_always_pneumonia"]
    table = Table(
        title=f"{report['split']}: {report['n']} images "
        f"({report['n_normal']} NORMAL, {report['n_pneumonia']} PNEUMONIA), "
        f"threshold {report['threshold']:.3f}"
    )
    for column in ("metric", "model", "95% interval", "always PNEUMONIA"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in RATE_METRICS:
        table.add_row(
            LABELS[key],
            format_value(key, report[key]),
            format_interval(key, report["ci95"][key], sep="-"),
            format_value(key, base[key]),
        )
    console = Console()
    console.print(table)
    if report["skipped"]:
        console.print(f"[yellow]{len(report['skipped'])} unreadable image(s) skipped[/yellow]")


def _run_evaluate(args: argparse.Namespace) -> int:
    report = evaluate(
        model=args.model,
        data=data_dir(args),
        split=args.split,
        labels=args.labels,
        images=args.images,
        output=args.output,
        batch_size=args.batch_size,
        workers=args.workers,
        stress=args.stress,
        seed=args.seed,
    )
    _summary(report)
    from rich.console import Console

    output = Path(report["path"])
    Console().print(f"report: {output} and {output.with_suffix('.md')}")
    if args.stress:
        Console().print(f"stress test: {output.with_suffix('.stress.md')}")
    return 0


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    parser = add_command(sub, "evaluate", evaluate, _run_evaluate)
    add_model_arg(parser)
    add_data_arg(parser)
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="auto",
        help="test, val or train folder, or validation: the model's own patient-level "
        "validation films (default auto: test when the data root has it, else validation; "
        "ignored with --labels or --images)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="label CSV (path,label,label_index,patient) to evaluate instead of a split folder",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="a folder with NORMAL/ and PNEUMONIA/ subfolders to evaluate (a site's own films)",
    )
    parser.add_argument(
        "--stress",
        action="store_true",
        help="also run the seeded battery of acquisition shifts (report NAME.stress.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the stress battery")
    parser.add_argument(
        "--output",
        type=_json_path,
        default=None,
        help="report JSON path; the .md report, figures and predictions CSV go beside it "
        "(default: runs/eval-<model>-<split>/report.json)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    parser.add_argument(
        "--workers", type=_positive_int, default=2, help="image decoding threads (default: 2)"
    )
