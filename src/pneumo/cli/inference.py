"""`pneumo` subcommands: inference (predict, export, serve)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pneumo.api.server import serve
from pneumo.cli.common import add_command, add_model_arg
from pneumo.inference.cascade import CASCADE_BATCH_SIZE
from pneumo.inference.catalog import describe_models
from pneumo.inference.engine import configured_backend
from pneumo.inference.export import export_onnx
from pneumo.inference.predict import predict_files
from pneumo.inference.predictor import BATCH_SIZE
from pneumo.inference.ray_predict import STALL_TIMEOUT

log = logging.getLogger(__name__)

LOCAL_RAY = "local"
"""``--ray`` without an address: start a Ray for this run on this machine."""


def _predict(args: argparse.Namespace) -> int:
    from pneumo.errors import PneumoError

    if not args.paths:
        raise PneumoError("give image files, folders or a CSV of paths to classify")
    options = dict(
        model=args.model,
        backend=configured_backend(args.backend),
        precision=args.precision,
        output=args.output,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.no_progress,
    )
    if args.heatmaps is not None:
        if args.ray is not None:
            raise PneumoError("--heatmaps runs on this machine: leave out --ray")
        options["heatmaps"] = args.heatmaps
    if args.ray is None:
        if args.timeout is not None:
            raise PneumoError("--timeout applies to --ray runs only")
        summary = predict_files(args.paths, **options)
    else:  # Ray is imported only here: the local path never loads it
        from pneumo.inference.ray_predict import predict_with_ray

        address = None if args.ray == LOCAL_RAY else args.ray
        options["batch_size"] = BATCH_SIZE if args.batch_size is None else args.batch_size
        if args.timeout is not None:
            options["timeout"] = args.timeout
        summary = predict_with_ray(args.paths, address=address, **options)
    ok = summary.total - summary.errors
    where = f" -> {summary.output}" if summary.output else ""
    sys.stderr.write(f"{ok} of {summary.total} images classified{where}\n")
    if summary.errors:
        sys.stderr.write(f"{summary.errors} could not be read (see the error column)\n")
    return 0 if ok > 0 or summary.total == 0 else 1


def _models(args: argparse.Namespace) -> int:
    from pneumo.inference.catalog import describe_models, format_summary

    summaries = describe_models(args.models, check=args.check)
    sys.stdout.write("\n\n".join(format_summary(s) for s in summaries) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    path = export_onnx(args.model, args.output, opset=args.opset)
    sys.stderr.write(f"wrote {path}\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    serve(
        host=args.host,
        port=args.port,
        model=args.model,
        workers=args.workers,
        backend=configured_backend(args.backend),
        precision=args.precision,
    )
    return 0


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--backend and --precision, with the engine's own choices and defaults."""
    from pneumo.inference.engine import BACKEND_HELP, BACKENDS, SERVING_PRECISIONS

    parser.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    parser.add_argument(
        "--precision",
        choices=SERVING_PRECISIONS,
        default="auto",
        help="default auto: where the accuracy guard measured it faster, bf16 (or int8) with "
        "fp32 again near a decision edge (bf16+fp32: the same decisions as fp32), else fp32 "
        "(see `pneumo models`); naming one forces it",
    )


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
    p = add_command(sub, "predict", predict_files, _predict)
    p.add_argument("paths", nargs="*", help="image files, folders or CSV files with a path column")
    add_model_arg(p)
    add_engine_args(p)
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="out.csv, out.json or out.parquet (default: CSV on stdout)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"images per forward pass (default: {CASCADE_BATCH_SIZE} for a cascade such as "
        f"bf16+fp32, {BATCH_SIZE} otherwise and with --ray)",
    )
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: cores)")
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help="run on Ray: alone, a Ray of its own on this machine for this run (never a running "
        "cluster, whatever RAY_ADDRESS says); 'auto' (RAY_ADDRESS, else the cluster started "
        "here) or HOST:PORT joins a cluster whose machines see the same model and input paths",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"with --ray: give up when no row has come for this long (default {STALL_TIMEOUT:g})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--heatmaps",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write a heatmap overlay (PNG) per diagnosed film to DIR, named by its row",
    )

    p = add_command(sub, "models", describe_models, _models)
    p.add_argument("models", nargs="*", type=Path, metavar="MODEL", help="model folders")
    p.add_argument("--check", action="store_true", help="run the accuracy guard again now")

    p = add_command(sub, "export", export_onnx, _export)
    add_model_arg(p)
    p.add_argument(
        "--output", "-o", type=Path, default=None, help="ONNX file (default: the engine's cache)"
    )
    p.add_argument("--opset", type=int, default=17)

    p = add_command(sub, "serve", serve, _serve)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_model_arg(p)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    add_engine_args(p)
