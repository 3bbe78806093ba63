"""`pneumo` subcommands: app."""

from __future__ import annotations

import argparse
import sys

from pneumo import limits
from pneumo.cli.common import add_command
from pneumo.inference.engine import configured_backend


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.app.launch import DEFAULT_HOST, run_app
    from pneumo.inference.engine import BACKEND_HELP, BACKENDS

    p = add_command(sub, "app", run_app, _app)

    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 for "
        "every interface, behind a proxy: see docs/app.md)",
    )
    p.add_argument("--model", default=None, help="model directory (default: bundled model)")
    p.add_argument("--db", default=None, help="SQLite file or SQLAlchemy URL for the records")
    p.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.MAX_UPLOAD_MIB,
        help=f"largest image accepted, uploaded or fetched, in MiB (default {limits.MAX_UPLOAD_MIB:g})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port, at the --host address "
        "(default $PNEUMO_APP_METRICS_PORT, else off; 0: off)",
    )
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from the terminal, print its hash for "
        "PNEUMO_APP_PASSWORD_HASH and exit",
    )


def _app(args: argparse.Namespace) -> int:
    if args.hash_password:
        import getpass

        from pneumo.app.auth import hash_password

        password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline()
        password = password.rstrip("\n")
        if not password:
            from pneumo.errors import PneumoError

            raise PneumoError("empty password")
        sys.stdout.write(hash_password(password) + "\n")
        return 0
    from pneumo.app.launch import run_app

    return run_app(
        port=args.port,
        host=args.host,
        model=args.model,
        db=args.db,
        backend=configured_backend(args.backend),
        max_upload_mb=args.max_upload_mb,
        metrics_port=args.metrics_port,
    )
