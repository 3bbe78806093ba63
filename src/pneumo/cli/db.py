"""`pneumo` subcommands: db (the patient-records database of the app)."""

from __future__ import annotations

import argparse
import logging
import sys

from pneumo.cli.common import add_command

DB_HELP = "SQLite file or SQLAlchemy URL (default $PNEUMO_DB or ~/.local/share/pneumo/pneumo.db)"


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.storage.db import check_database, migrate_database

    group = sub.add_parser("db", help="the app's patient-records database: migrate, check")
    db_sub = group.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    p = add_command(db_sub, "migrate", migrate_database, _migrate)
    p.add_argument("--db", default=None, help=DB_HELP)
    p = add_command(db_sub, "check", check_database, _check)
    p.add_argument("--db", default=None, help=DB_HELP)


def quiet_alembic() -> None:
    """Alembic's INFO lines (plugins, contexts) say nothing an operator needs."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _migrate(args: argparse.Namespace) -> int:
    quiet_alembic()
    from pneumo.storage.db import migrate_database

    sys.stderr.write(f"database at revision {migrate_database(args.db)}\n")
    return 0


def _check(args: argparse.Namespace) -> int:
    quiet_alembic()
    from pneumo.storage.db import check_database

    sys.stdout.write(f"ready: database at revision {check_database(args.db)}\n")
    return 0
