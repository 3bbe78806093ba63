"""`pneumo` subcommands: report (figures over the app's patient records)."""

from __future__ import annotations

import argparse
import json
import sys

from pneumo.cli.common import add_command
from pneumo.cli.db import DB_HELP, quiet_alembic


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.evaluation.agreement import agreement_report

    group = sub.add_parser("report", help="reports over the app's records: agreement")
    report_sub = group.add_subparsers(dest="report_command", metavar="COMMAND", required=True)
    p = add_command(report_sub, "agreement", agreement_report, _agreement)
    p.add_argument("--db", default=None, help=DB_HELP)
    p.add_argument("--json", action="store_true", help="JSON instead of Markdown tables")


def _agreement(args: argparse.Namespace) -> int:
    quiet_alembic()
    from pneumo.evaluation.agreement import agreement_markdown, agreement_report

    report = agreement_report(args.db)
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        sys.stdout.write(agreement_markdown(report))
    return 0
