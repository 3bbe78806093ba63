"""Argument helpers shared by the subcommand groups."""

from __future__ import annotations

import argparse
import inspect
import math
import os
from pathlib import Path

DEFAULT_DATA = Path("data/chest_xray")


def default_data_dir() -> Path:
    """``$PNEUMO_DATA`` when set, else ``./data/chest_xray``."""
    return Path(os.environ.get("PNEUMO_DATA", DEFAULT_DATA))


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root with {train,val,test}/{NORMAL,PNEUMONIA}/ "
        "(default: $PNEUMO_DATA or ./data/chest_xray)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    return args.data if getattr(args, "data", None) else default_data_dir()


def summary(doc: str) -> str | None:
    """First sentence of a docstring's first paragraph, for the command list."""
    first = " ".join(doc.split("\n\n")[0].split())
    if not first:
        return None
    end = first.find(". ")
    return (first[: end + 1] if end >= 0 else first).replace("``", "`")


def add_command(sub, name: str, func, handler, **kwargs) -> argparse.ArgumentParser:
    """Add a subcommand whose help text is the docstring of the library function it calls."""
    doc = inspect.getdoc(func) or ""
    parser = sub.add_parser(
        name,
        help=summary(doc),
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    parser.set_defaults(func=handler)
    return parser


def bounded_int(low: int, high: int):
    """An argparse type: an integer in ``low..high``; anything else is a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def bounded_float(low: float, high: float, *, include_low: bool = False):
    """An argparse type: a finite number in ``(low, high]`` (``[low, high]`` with include_low)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value >= low if include_low else value > low
        if not (math.isfinite(value) and above and value <= high):
            bracket = "[" if include_low else "("
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low:g}, {high:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = bounded_int(1, 1_000_000)
"""A count of at least 1 (batch sizes, workers, images)."""
thread_count = bounded_int(1, 1024)
"""Threads for inference: at least 1, at most 1024."""
port_number = bounded_int(1, 65535)
"""A TCP port."""
seed_int = bounded_int(0, 2**32 - 1)
"""A random seed (numpy accepts 0..2**32-1)."""
