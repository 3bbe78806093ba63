"""The ``pneumo`` command. Each group module registers thin subcommands over importable
functions; heavy imports happen inside the commands so ``pneumo --help`` stays instant."""

from __future__ import annotations

import argparse
import logging
import sys

from pneumo import __version__
from pneumo.cli import app, data, evaluation, inference, training

GROUPS = (data, training, evaluation, inference, app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumonia detection on pediatric chest X-rays (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from pneumo.errors import PneumoError

    try:
        return int(args.func(args) or 0)
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # noqa: T201
        return 130


if __name__ == "__main__":
    sys.exit(main())
