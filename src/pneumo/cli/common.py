"""Argument helpers shared by the subcommand groups."""

from __future__ import annotations

import argparse
import inspect
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


def add_model_arg(parser: argparse.ArgumentParser, what: str = "model folder") -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"{what} (default: $PNEUMO_MODEL or the bundled models/default)",
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
