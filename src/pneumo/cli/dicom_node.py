"""`pneumo` subcommands: dicom-node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo.cli.common import add_command


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    from pneumo.dicom_node.config import NodeConfig
    from pneumo.dicom_node.node import run_node
    from pneumo.inference.engine import BACKENDS

    d = NodeConfig.__dataclass_fields__
    p = add_command(sub, "dicom-node", run_node, _dicom_node)
    p.add_argument("--ae-title", default=d["ae_title"].default, help="this node's AE title")
    p.add_argument("--port", type=int, default=d["port"].default, help="DICOM port to listen on")
    p.add_argument(
        "--bind",
        default=d["bind"].default,
        help="address to listen on (default loopback; 0.0.0.0 for the hospital network)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AE",
        help="calling AE title allowed to send (repeat; default: any)",
    )
    p.add_argument(
        "--destination",
        default=None,
        metavar="AE@HOST:PORT",
        help="where results are sent by C-STORE (the PACS); without it they wait in the outbox",
    )
    p.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="folder of the inbox and outbox (default ~/.local/share/pneumo/dicom-node)",
    )
    p.add_argument("--db", default=None, help="SQLite file or SQLAlchemy URL for the records")
    p.add_argument("--model", default=None, help="model directory (default: bundled model)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=d["backend"].default,
        help=f"inference engine (default {d['backend'].default})",
    )
    p.add_argument("--no-heatmaps", action="store_true", help="send the SR only (no torch)")
    p.add_argument(
        "--queue-size",
        type=int,
        default=d["queue_size"].default,
        help="films held for classification at most; beyond, senders are told to retry",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="print what waits in the inbox and outbox and how delivery goes, then exit",
    )


def _dicom_node(args: argparse.Namespace) -> int:
    from pneumo.dicom_node.config import Destination, NodeConfig, default_spool_dir

    spool = args.spool or default_spool_dir()
    if args.status:
        from pneumo.dicom_node.spool import spool_status

        sys.stdout.write("\n".join(spool_status(spool).lines()) + "\n")
        return 0
    from pneumo.extras import require

    require("dicom-node", "pneumo dicom-node", "pynetdicom", "highdicom", "pydicom")
    from pneumo.dicom_node.node import run_node

    config = NodeConfig(
        ae_title=args.ae_title,
        port=args.port,
        bind=args.bind,
        allowed_callers=tuple(args.allow),
        destination=Destination.parse(args.destination) if args.destination else None,
        spool_dir=spool,
        db=args.db,
        model=args.model,
        backend=args.backend,
        heatmaps=not args.no_heatmaps,
        queue_size=args.queue_size,
    )
    return run_node(config)
