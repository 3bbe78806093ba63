"""Batch prediction on a Ray cluster: the inputs become a Ray dataset, decoding runs as a task
stage (any CPU of the cluster), the model runs in a pool of actors (one model load each), and
the rows come back to this process in input order, written exactly as the local path writes
them (CSV or JSON; Parquet for large runs). Ray retries failed tasks and restarts dead actors,
so a worker lost mid-run costs time, not rows.

Meant for ``pneumo predict --ray``; nothing on the local path imports this module or Ray."""

from __future__ import annotations

import contextlib
import logging
import os
from functools import lru_cache
from pathlib import Path

from pneumo.data.decode import printable
from pneumo.errors import PneumoError
from pneumo.inference.base import BATCH_SIZE, Prediction, Predictor
from pneumo.inference.predict import PredictSummary, collect_inputs
from pneumo.inference.rows import COLUMNS, RowWriter, output_format, prediction_row

log = logging.getLogger(__name__)

PARQUET_SUFFIX = ".parquet"
DECODE_MEMORY = 256 * 2**20
"""Memory reserved per decode task (bytes)."""
MAX_BLOCKS = 2000
"""Most blocks the inputs are cut into: enough to spread decoding over a large cluster, few
enough that Ray's bookkeeping per block stays small on a run over millions of files."""
MODEL_SHARE = 0.5
"""Share of the cluster's CPUs given to the model actors; decoding full-size films costs about
as much CPU as the network, and the decode tasks get the rest."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra
    except ImportError:
        raise PneumoError("Ray is not installed: pip install 'pneumo[ray]'") from None
    return ray


class _Decoder(Predictor):
    """The decode half of a Predictor: the model's own preprocessing from its metadata, so the
    decode tasks make exactly the arrays the local path makes, without loading the network."""

    def __init__(self, model_dir: str):
        from pneumo.inference.engine import read_ood_tensors
        from pneumo.inference.ood import LAYOUT_KEY
        from pneumo.models.checkpoint import read_metadata

        # The layout template: the decode tasks measure the statistics the OOD flag reads.
        template = {k: v for k, v in read_ood_tensors(model_dir).items() if k == LAYOUT_KEY}
        super().__init__(read_metadata(model_dir), template)

    def forward(self, batch):  # pragma: no cover - never called
        raise NotImplementedError("decode only")

    def decode_path(self, path: str):
        """(array, stats) or the error text, as ``iter_predict_sources`` reports it."""
        try:
            _, array, stats = self.decode(path, path)
            return array, stats
        except PneumoError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            log.warning("unexpected error decoding an image", exc_info=True)  # no name: PHI
            return f"{path}: {exc}"


@lru_cache(maxsize=4)
def _decoder(model_dir: str) -> _Decoder:
    return _Decoder(model_dir)  # once per worker process, not per batch


def _decode_batch(batch: dict, model_dir: str) -> dict:
    """Task stage: files -> preprocessed arrays plus the image statistics the OOD flag needs.
    A file that cannot be decoded keeps its row, with a zero array and its error."""
    import numpy as np

    decoder = _decoder(model_dir)
    h, w = decoder.metadata.data_config.input_size
    n = len(batch["index"])
    images = np.zeros((n, 3, h, w), dtype=np.float32)
    stats = np.zeros((n, 4), dtype=np.float64)
    headers = [""] * n  # what a DICOM header objects to (InputStats.header_reason)
    errors = [str(e) for e in batch["error"]]
    for i, path in enumerate(batch["path"]):
        if errors[i]:
            continue
        decoded = decoder.decode_path(str(path))
        if isinstance(decoded, str):
            errors[i] = decoded
            continue
        images[i], st = decoded
        stats[i] = (st.chroma, st.aspect, st.contrast, st.layout)
        headers[i] = st.header_reason or ""
    return {
        "index": batch["index"],
        "path": batch["path"],
        "error": np.array(errors, dtype=object),
        "image": images,
        "stats": stats,
        "header": np.array(headers, dtype=object),
    }


def _row_schema():
    import pyarrow as pa

    types = {
        "path": pa.string(),
        "class": pa.string(),
        "probability": pa.float64(),
        "confidence": pa.float64(),
        "uncertain": pa.bool_(),
        "ood": pa.bool_(),
        "ood_score": pa.float64(),
        "ood_reason": pa.string(),
        "error": pa.string(),
    }
    return pa.schema([("index", pa.int64())] + [(c, types[c]) for c in COLUMNS])


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

        from pneumo.inference.base import InputStats

        paths = [str(p) for p in batch["path"]]
        preds = [
            Prediction(source=p, error=str(e) or None)
            for p, e in zip(paths, batch["error"], strict=True)
        ]
        good = [i for i, p in enumerate(preds) if p.error is None]
        if good:
            stats = [
                InputStats(*map(float, batch["stats"][i]), str(batch["header"][i]) or None)
                for i in good
            ]
            answers = self.predictor.predict_arrays(
                batch["image"][good], [paths[i] for i in good], stats
            )
            for i, answer in zip(good, answers, strict=True):
                preds[i] = answer
        rows = [
            {"index": int(k), **prediction_row(p)}
            for k, p in zip(batch["index"], preds, strict=True)
        ]
        return pa.Table.from_pylist(rows, schema=self.schema)


def _plan(ray, actors: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, threads per actor) from the cluster: about MODEL_SHARE of its CPUs to the model,
    no actor wider than the smallest node, at least one CPU left for decoding."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
    total = int(sum(n["Resources"]["CPU"] for n in nodes)) or 1
    smallest = int(min((n["Resources"]["CPU"] for n in nodes), default=1)) or 1
    model_cpus = max(1, min(int(total * MODEL_SHARE), total - 1))
    if actors is None:
        actors = max(1, model_cpus // 4) if threads is None else max(1, model_cpus // threads)
    if threads is None:
        threads = max(1, min(model_cpus // actors, smallest))
    return actors, threads


@contextlib.contextmanager
def _ray_session(ray, address: str | None, num_cpus: int | None):
    """Connect to ``address`` (``auto``, ``ray://host:port``) or start a local Ray for this run;
    a Ray already started by the caller is used as it is and left running."""
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


class _ParquetWriter:
    """Rows to one Parquet file, a row group per batch, renamed into place when complete."""

    def __init__(self, output: Path):
        self.output = output
        self.rows = 0

    def __enter__(self) -> _ParquetWriter:
        import pyarrow.parquet as pq

        self._tmp = self.output.with_name(self.output.name + f".{os.getpid()}.tmp")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp, _row_schema().remove(0))
        return self

    def write_table(self, table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is None:
            os.replace(self._tmp, self.output)
        else:
            self._tmp.unlink(missing_ok=True)


def _check_output(output: Path | None) -> None:
    if output is None:
        return
    if output.suffix.lower() != PARQUET_SUFFIX:
        output_format(output)  # .csv or .json, or a clear error
    if output.is_dir():
        raise PneumoError(f"{printable(str(output))}: is a folder; give a file name")


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
    progress: bool = True,
) -> PredictSummary:
    """Classify chest X-rays on Ray: same inputs, rows and order as ``predict_files``, one row
    per input with its error when it cannot be read. ``address``: None starts a local Ray for
    the run (``num_cpus`` caps it), ``auto`` or ``ray://host:port`` joins a cluster whose nodes
    see the same model folder and input paths. Output by suffix: .csv, .json or .parquet (one
    file, for runs too large to open as text); None writes CSV to stdout. ``actors`` and
    ``threads`` (per actor) default from the cluster's CPUs."""
    if not 1 <= batch_size <= 4096:
        raise PneumoError(f"--batch-size must be in 1..4096, got {batch_size}")
    from pneumo.models.checkpoint import resolve_model_dir

    output = Path(output) if output is not None else None
    _check_output(output)
    model_dir = str(resolve_model_dir(model).resolve())
    inputs = collect_inputs(paths)
    if not inputs:
        raise PneumoError("no inputs: give image files, folders or a CSV with a 'path' column")
    ray = _ray()
    with _ray_session(ray, address, num_cpus):
        n_actors, n_threads = _plan(ray, actors, threads)
        log.info("Ray: %d model actors x %d threads", n_actors, n_threads)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, streamed
        ctx.enable_progress_bars = progress
        items = [{"index": i, "path": x.path, "error": x.error or ""} for i, x in enumerate(inputs)]
        rows = (
            ray.data.from_items(
                items, override_num_blocks=min(MAX_BLOCKS, -(-len(items) // batch_size))
            )
            .map_batches(
                _decode_batch,
                fn_kwargs={"model_dir": model_dir},
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=1,
                # a full-size film at the decode pixel limit takes about this much; a request
                # of its own also keeps Ray from fusing decoding into the actors, where it would
                # run on the model's CPUs only
                memory=DECODE_MEMORY,
            )
            .map_batches(
                _PredictActor,
                fn_constructor_kwargs={
                    "model_dir": model_dir,
                    "backend": backend,
                    "precision": precision,
                    "threads": n_threads,
                    "batch": batch_size,
                },
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=n_threads,
            )  # Ray Data's defaults retry tasks and restart lost actors without limit
        )
        tables = rows.iter_batches(batch_size=None, batch_format="pyarrow")
        return _write(tables, output, expected=len(items))


def _write(tables, output: Path | None, *, expected: int) -> PredictSummary:
    """Rows from Ray (pyarrow tables in input order) to the output; counts the errors."""
    errors = total = 0
    parquet = output is not None and output.suffix.lower() == PARQUET_SUFFIX
    with _ParquetWriter(output) if parquet else RowWriter(output) as writer:
        for table in tables:
            # every input exactly once and in order, whatever Ray retried: else no output at all
            if table.column("index").to_pylist() != list(range(total, total + table.num_rows)):
                raise PneumoError(f"Ray returned rows out of order or twice after row {total}")
            table = table.drop_columns(["index"])
            total += table.num_rows
            errors += table.num_rows - table.column("error").null_count
            if parquet:
                writer.write_table(table)
            else:
                for row in table.to_pylist():
                    writer.write(row)
        if total != expected:
            raise PneumoError(f"Ray returned {total} rows for {expected} inputs")
    return PredictSummary(total=total, errors=errors, output=output)
