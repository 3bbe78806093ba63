"""`pneumo` subcommands: data (stats, labels, show, download)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo.cli.common import add_command, add_data_arg, data_dir
from pneumo.data.download import download_dataset
from pneumo.data.labels import write_labels
from pneumo.data.show import show_images
from pneumo.data.stats import FORMATS, SUFFIX_FORMATS, dataset_stats, render


def _console(stderr: bool = False):
    from rich.console import Console

    # soft_wrap: paths stay on one line, so they can be copied and grepped
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_unreadable(bad) -> None:
    # each file was already logged as a warning with its path and reason, as it was found
    if bad:
        _console(stderr=True).print(
            f"[yellow]{len(bad)} unreadable file(s) skipped (path and reason above)[/yellow]"
        )


def _stats(args: argparse.Namespace) -> int:
    from rich.table import Table

    from pneumo.data.stats import count_rows
    from pneumo.errors import DataError

    file_format = args.format
    if args.output is not None and file_format == "table":
        file_format = SUFFIX_FORMATS.get(args.output.suffix.lower(), "")
        if not file_format:
            raise DataError(
                f"cannot tell the format of {args.output} from its suffix; "
                "use .csv, .md or .json, or give --format"
            )
    stats = dataset_stats(data_dir(args))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render(stats, file_format))
    if args.format != "table":
        if args.output is None:
            sys.stdout.write(render(stats, args.format))
        else:
            _console().print(f"wrote {args.output}", markup=False)
        _print_unreadable(stats.unreadable)
        return 0
    table = Table(title=f"Images in {stats.root}")
    for name, justify in (("split", "left"), ("class", "left"), ("images", "right")):
        table.add_column(name, justify=justify)
    table.add_column("share", justify="right")
    for split, label, count, percent in count_rows(stats):
        style = "bold" if label == "total" else None
        table.add_row(split, label, str(count), percent, style=style)
    out = _console()
    out.print(table)
    if stats.sizes:
        s = stats.sizes
        out.print(
            f"sizes (pixels): width {s.width_min}-{s.width_max} (median {s.width_median:g}), "
            f"height {s.height_min}-{s.height_max} (median {s.height_median:g})"
        )
    out.print("modes: " + ", ".join(f"{k} {v}" for k, v in stats.modes.items()))
    out.print(f"unreadable files (not counted): {len(stats.unreadable)}")
    if args.output is not None:
        out.print(f"wrote {args.output}", markup=False)
    _print_unreadable(stats.unreadable)
    return 0


def _labels(args: argparse.Namespace) -> int:
    from rich.table import Table

    report = write_labels(
        data_dir(args), args.output, val_fraction=args.val_fraction, seed=args.seed
    )
    table = Table(title=f"Label files in {args.output}")
    for name in ("split", "file", "NORMAL", "PNEUMONIA", "total"):
        table.add_column(name, justify="left" if name in ("split", "file") else "right")
    for split, path in report.files.items():
        counts = report.counts[split]
        n = sum(counts.values())
        table.add_row(split, str(path), *(str(v) for v in counts.values()), str(n))
    _console().print(table)
    _print_unreadable(report.skipped)
    return 0


def _show(args: argparse.Namespace) -> int:
    result = show_images(
        data_dir(args), args.output, split=args.split, per_class=args.per_class, seed=args.seed
    )
    out = _console()
    out.print(f"wrote {result.output}", markup=False)
    for label, records in result.shown.items():
        out.print(f"{label}: " + ", ".join(r.path.name for r in records), markup=False)
    _print_unreadable(result.skipped)
    return 0


def _download(args: argparse.Namespace) -> int:
    from pneumo.data.download import MENDELEY_URL

    result = download_dataset(
        args.dest,
        sha256=args.sha256,
        url=args.url or MENDELEY_URL,
        remove_archive=args.remove_archive,
    )
    out = _console()
    if result.sha256 is None:
        out.print(f"{result.data_root} already holds {result.images} images", markup=False)
    else:
        if result.resumed_from:
            out.print(f"resumed after {result.resumed_from:,} bytes", markup=False)
        out.print(f"sha256 {result.sha256} (pin it with --sha256)", markup=False)
        out.print(f"unpacked {result.images} images into {result.data_root}", markup=False)
    out.print(
        f"use it with --data {result.data_root} or PNEUMO_DATA={result.data_root}",
        markup=False,
    )
    return 0


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    group = sub.add_parser("data", help="find, describe, label, show and download the data set")
    data_sub = group.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = add_command(data_sub, "stats", dataset_stats, _stats)
    add_data_arg(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="also write to this file (format from --format, or from the suffix "
        ".csv/.md/.json when --format is table)",
    )

    p = add_command(data_sub, "labels", write_labels, _labels)
    add_data_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the label CSVs")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="carve this share of train out as val.csv, by patient (e.g. 0.15)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split")

    p = add_command(data_sub, "show", show_images, _show)
    add_data_arg(p)
    p.add_argument("--split", default="train", help="split to draw from (default: train)")
    p.add_argument("--per-class", type=int, default=4, help="images per class (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pick")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")

    p = add_command(data_sub, "download", download_dataset, _download)
    p.add_argument(
        "--dest", type=Path, default=Path("data"), help="folder to download into (default: data)"
    )
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    p.add_argument("--url", default=None, help="a mirror of ChestXRay2017.zip (zip or tar)")
    p.add_argument(
        "--remove-archive", action="store_true", help="delete the archive after unpacking"
    )
