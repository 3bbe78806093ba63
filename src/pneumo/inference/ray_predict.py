"""Batch prediction on a Ray cluster: the inputs become a Ray dataset, decoding runs as a task
stage (any CPU of the cluster), the model runs in a pool of actors (one model load each), and
the rows come back to this process in input order, written by the local path's writer (CSV,
JSON or Parquet). Ray retries failed tasks and restarts dead actors, so a worker lost mid-run
costs time, not rows; the plan never lets the model actors hold the CPUs decoding waits for,
so a run can finish on whatever nodes are left, and a run that stops making progress fails
after a stated time instead of waiting forever.

Meant for ``pneumo predict --ray``; nothing on the local path imports this module or Ray."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import PneumoError
from pneumo.inference.pipeline import NUMBERS, FilmPipeline, InputStats, PreparedFilm
from pneumo.inference.predict import PredictSummary, collect_inputs
from pneumo.inference.predictor import BATCH_SIZE
from pneumo.inference.rows import RowWriter, arrow_schema, check_output, prediction_row
from pneumo.progress import progress_bar

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
"""Address of the Ray that a bare ``--ray`` starts: its node is announced on loopback only."""
DECODE_MEMORY = 256 * 2**20
"""Memory reserved per decode task (bytes)."""
MAX_BLOCKS = 2000
"""Most blocks the inputs are cut into: enough to spread decoding over a large cluster, few
enough that Ray's bookkeeping per block stays small on a run over millions of files."""
MODEL_SHARE = 0.5
"""Share of the cluster's CPUs given to the model actors; decoding full-size films costs about
as much CPU as the network, and the decode tasks get the rest."""
STALL_TIMEOUT = 900.0
"""Default ``--timeout``: seconds without a new row before a Ray run is given up. Long enough
for a fresh node's first model load and accuracy guard; a lost node's work is redone well
within it."""
WATCH_EVERY = 2.0
"""Seconds between looks at the cluster's nodes (to report a lost one) while rows are awaited."""
MAX_ATTEMPTS = 3
"""Runs over the remaining inputs after Ray lost results with a node, before giving up."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra
    except ImportError:
        raise PneumoError("Ray is not installed: pip install 'pneumo[ray]'") from None
    return ray


def _decode_batch(batch: dict, pipeline: FilmPipeline) -> dict:
    """Task stage: files -> network inputs plus the statistics the OOD flag reads, by the
    model's film pipeline (no network loaded). A file that cannot be decoded keeps its row,
    with a zero array and its error."""
    import numpy as np

    h, w = pipeline.input_size
    n = len(batch["index"])
    images = np.zeros((n, 3, h, w), dtype=np.float32)
    stats = np.zeros((n, NUMBERS), dtype=np.float64)
    headers = [""] * n  # what a DICOM header objects to (InputStats.header_reason)
    errors = [str(e) for e in batch["error"]]
    for i, (file, name) in enumerate(zip(batch["file"], batch["path"], strict=True)):
        if errors[i]:
            continue
        # ``file`` is read (the driver made it absolute), ``name`` (as the user gave it) shown
        film = pipeline.prepare(str(file), str(name))
        if film.error is not None:
            errors[i] = film.error
            continue
        images[i] = film.array
        stats[i] = film.stats.numbers()
        headers[i] = film.stats.header_reason or ""
    return {
        "index": batch["index"],
        "path": batch["path"],
        "error": np.array(errors, dtype=object),
        "image": images,
        "stats": stats,
        "header": np.array(headers, dtype=object),
    }


def _row_schema():
    """The rows' Arrow schema with the input's position first (dropped when written)."""
    import pyarrow as pa

    return arrow_schema().insert(0, pa.field("index", pa.int64()))


class _PredictActor:
    """Actor stage: one Predictor per actor, loaded once, with ``threads`` intra-op threads."""

    def __init__(self, model_dir: str, backend: str, precision: str, threads: int, batch: int):
        from pneumo.inference.engine import load_predictor

        self.predictor = load_predictor(
            model_dir, backend=backend, precision=precision, threads=threads, batch_size=batch
        )
        self.schema = _row_schema()

    def __call__(self, batch: dict):
        import pyarrow as pa

        films = [
            PreparedFilm(str(name), error=str(error))
            if error
            else PreparedFilm(
                str(name), image, InputStats.from_numbers(numbers, str(header) or None)
            )
            for name, error, image, numbers, header in zip(
                batch["path"],
                batch["error"],
                batch["image"],
                batch["stats"],
                batch["header"],
                strict=True,
            )
        ]
        rows = [
            {"index": int(k), **prediction_row(p)}
            for k, p in zip(batch["index"], self.predictor.predict_prepared(films), strict=True)
        ]
        return pa.Table.from_pylist(rows, schema=self.schema)


@dataclass(frozen=True)
class Plan:
    """How a run uses the cluster."""

    actors: int
    """Model actors (one model load each)."""
    threads: int
    """Intra-op threads per actor."""
    decoders: int
    """Decode tasks at a time."""


def plan(node_cpus: list[float], actors: int | None = None, threads: int | None = None) -> Plan:
    """A plan for live nodes with these CPUs: about MODEL_SHARE of the CPUs to the model, no
    actor wider than the smallest node, the rest to decoding. The actors reserve no CPU (their
    threads are counted in the decode tasks' share instead), so a decode task can always run
    on any node left, whichever nodes and actors are lost: the run cannot deadlock."""
    cpus = [c for c in node_cpus if c >= 1] or [1.0]
    total, smallest = int(sum(cpus)), int(min(cpus))
    model_cpus = max(1, min(int(total * MODEL_SHARE), total - 1))
    if actors is None:
        actors = max(1, model_cpus // 4) if threads is None else max(1, model_cpus // threads)
    if threads is None:
        threads = max(1, min(model_cpus // actors, smallest))
    return Plan(actors, threads, decoders=max(1, total - actors * threads))


def _live_nodes(ray) -> dict[str, dict]:
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def _describe(node: dict) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node {node['NodeID'][:8]})"


@contextlib.contextmanager
def _ray_session(ray, address: str | None, num_cpus: int | None):
    """Join ``address`` (``auto``: the cluster started on this machine or ``RAY_ADDRESS``;
    ``HOST:PORT``) or, for None, start a Ray of our own on loopback for this run, whatever
    ``RAY_ADDRESS`` says or other clusters run here. A Ray already started by the caller is
    used as it is and left running."""
    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PneumoError(
                f"cannot join the Ray cluster at {address}: {first} (every node needs "
                "RAY_AUTH_MODE=token and the cluster's token file; see the README)"
            ) from None
    else:  # "local" never joins: RAY_ADDRESS and running clusters are ignored
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            **quiet,
        )
    try:
        yield
    finally:
        ray.shutdown()


def predict_with_ray(
    paths: list[str | Path],
    *,
    model: str | Path | None = None,
    output: str | Path | None = None,
    address: str | None = None,
    backend: str = "auto",
    precision: str = "auto",
    batch_size: int = BATCH_SIZE,
    actors: int | None = None,
    threads: int | None = None,
    num_cpus: int | None = None,
    timeout: float = STALL_TIMEOUT,
    progress: bool = True,
) -> PredictSummary:
    """Classify chest X-rays on Ray: same inputs, rows and order as ``predict_files``, one row
    per input with its error when it cannot be read. ``address``: None starts a Ray of its own
    on this machine for the run (``num_cpus`` caps it), ``auto`` or ``HOST:PORT`` joins a
    cluster whose nodes see the same model folder and input paths (relative paths are made
    absolute here). Output by suffix: .csv, .json or .parquet; None writes CSV to stdout.
    ``actors`` and ``threads`` (per actor) default from the cluster's CPUs. A run with no new
    row for ``timeout`` seconds fails, naming any node lost meanwhile."""
    if not 1 <= batch_size <= 4096:
        raise PneumoError(f"--batch-size must be in 1..4096, got {batch_size}")
    if not timeout > 0:
        raise PneumoError(f"--timeout must be a positive number of seconds, got {timeout}")
    from pneumo.models.checkpoint import resolve_model_dir

    output = Path(output) if output is not None else None
    check_output(output)
    model_dir = str(resolve_model_dir(model).resolve())
    inputs = collect_inputs(paths)
    if not inputs:
        raise PneumoError("no inputs: give image files, folders or a CSV with a 'path' column")
    # paths as given in the rows, absolute for the workers, whose working folder is not ours
    items = [
        {"index": i, "path": x.name, "file": os.path.abspath(x.path), "error": x.error or ""}
        for i, x in enumerate(inputs)
    ]
    ray = _ray()
    settings = {"model_dir": model_dir, "backend": backend, "precision": precision}
    with (
        _ray_session(ray, address, num_cpus),
        RowWriter(output) as writer,
        progress_bar(len(items), "predict on Ray", enabled=progress, transient=True) as advance,
    ):
        rows = InOrder(writer, advance)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            before = _live_nodes(ray)
            try:
                tables = _run(ray, items[rows.total :], settings, batch_size, actors, threads)
                _drain(ray, tables, rows, before, timeout)
                break
            except ray.exceptions.RayError as exc:
                lost = [_describe(n) for k, n in before.items() if k not in _live_nodes(ray)]
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if not lost or attempt == MAX_ATTEMPTS:
                    raise PneumoError(
                        f"Ray run failed after {rows.total} of {len(items)} rows: {first}"
                        + (f" (lost: {', '.join(lost)})" if lost else "")
                    ) from None
                log.warning(
                    "Ray lost results with %s; running the %d remaining inputs again",
                    ", ".join(lost),
                    len(items) - rows.total,
                )
        if rows.total != len(items):
            raise PneumoError(f"Ray returned {rows.total} rows for {len(items)} inputs")
    return PredictSummary(total=rows.total, errors=rows.errors, output=output)


def _run(ray, items: list[dict], settings: dict, batch_size: int, actors, threads):
    """Start Ray Data over ``items``, planned for the nodes alive now: Arrow tables in order."""
    nodes = _live_nodes(ray).values()
    p = plan([n["Resources"].get("CPU", 0) for n in nodes], actors, threads)
    log.info(
        "Ray: %d nodes; %d model actors x %d threads, %d decode tasks at a time",
        len(nodes),
        p.actors,
        p.threads,
        p.decoders,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in input order, streamed
    ctx.enable_progress_bars = False  # one progress line: ours
    return (
        ray.data.from_items(
            items, override_num_blocks=min(MAX_BLOCKS, -(-len(items) // batch_size))
        )
        .map_batches(
            _decode_batch,
            fn_kwargs={"pipeline": FilmPipeline.load(settings["model_dir"])},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=p.decoders),
            # a full-size film at the decode pixel limit takes about this much; a request
            # of its own also keeps Ray from fusing decoding into the actors, where it would
            # run on the model's CPUs only
            memory=DECODE_MEMORY,
        )
        .map_batches(
            _PredictActor,
            fn_constructor_kwargs={**settings, "threads": p.threads, "batch": batch_size},
            compute=ray.data.ActorPoolStrategy(size=p.actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=0,  # see plan(): holding no CPU, the actors can never starve decoding
            scheduling_strategy="SPREAD",  # one per node where the nodes allow
        )  # Ray Data's defaults retry tasks and restart lost actors without limit
        .iter_batches(batch_size=None, batch_format="pyarrow")
    )


class InOrder:
    """Hands Ray's tables to the writer only when they continue the run exactly: every input
    once and in order, whatever Ray retried, or no output at all."""

    def __init__(self, writer: RowWriter, advance=lambda n: None):
        self.writer, self.advance = writer, advance
        self.total = self.errors = 0

    def add(self, table) -> None:
        got = table.column("index").to_pylist()
        if got != list(range(self.total, self.total + table.num_rows)):
            raise PneumoError(
                f"Ray returned rows out of order, twice or with a gap after row {self.total} "
                f"(rows {got[0]}..{got[-1]})"
            )
        self.writer.write_table(table.drop_columns(["index"]))
        self.total += table.num_rows
        self.errors += table.num_rows - table.column("error").null_count
        self.advance(table.num_rows)


def _drain(ray, tables, rows: InOrder, nodes: dict[str, dict], timeout: float) -> None:
    """Write ``tables`` as they come; a node lost meanwhile is reported at once, and a wait
    of ``timeout`` seconds for the next table ends the run with what is known."""
    box: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def pull() -> None:  # Ray Data blocks while it waits: a thread of its own, so we can look
        try:
            for table in tables:
                box.put(table)
            box.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box.put(exc)

    threading.Thread(target=pull, name="ray-rows", daemon=True).start()
    lost: dict[str, dict] = {}
    last = time.monotonic()
    while True:
        try:
            item = box.get(timeout=WATCH_EVERY)
        except queue.Empty:
            live = _live_nodes(ray)
            for key, node in nodes.items():
                if key not in live and key not in lost:
                    lost[key] = node
                    log.warning(
                        "Ray node lost: %s; its work moves to the nodes left", _describe(node)
                    )
            if time.monotonic() - last > timeout:
                gone = f"; lost: {', '.join(map(_describe, lost.values()))}" if lost else ""
                raise PneumoError(
                    f"Ray run gave up: no row for {timeout:g} s (--timeout) after "
                    f"{rows.total} rows{gone}"
                ) from None
            continue
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        rows.add(item)
        last = time.monotonic()
