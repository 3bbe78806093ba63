"""Batch prediction over files, folders and CSV lists, with CSV/JSON output and sharding over
processes (``torchrun`` or ``--shard i/n``): each process takes every n-th input, writes
``OUT.rank{i}.csv``, and rank 0 merges the parts into ``OUT`` once all are there."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pneumo.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES, printable, sniff_file
from pneumo.errors import PneumoError
from pneumo.inference.base import BATCH_SIZE
from pneumo.inference.rows import (
    COLUMNS,  # noqa: F401 - part of this module's interface since before rows.py
    RowWriter,
    output_format,
    prediction_row,
    read_rows,
    write_rows,
)
from pneumo.progress import progress_bar

log = logging.getLogger(__name__)

INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


@dataclass(frozen=True)
class Shard:
    """This process's part of the inputs: every ``world``-th item starting at ``rank``."""

    rank: int = 0
    """Index of this process, 0 <= rank < world."""
    world: int = 1
    """Number of processes sharing the inputs."""

    def __post_init__(self):
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise PneumoError(f"invalid shard {self.rank}/{self.world}: need 0 <= i < n")

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"i/n"``; else ``RANK``/``WORLD_SIZE`` from the environment (torchrun); else 0/1."""
        if text:
            try:
                rank, world = (int(x) for x in text.split("/"))
            except ValueError:
                raise PneumoError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
            return cls(rank, world)
        if "WORLD_SIZE" in os.environ:
            try:
                return cls(int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]))
            except ValueError:
                raise PneumoError(
                    "RANK and WORLD_SIZE must be whole numbers, got "
                    f"{os.environ.get('RANK')!r} and {os.environ['WORLD_SIZE']!r}"
                ) from None
        return cls()


@dataclass
class PredictSummary:
    """What ``predict_files`` did."""

    total: int
    """Inputs this process handled."""
    errors: int
    """Inputs that could not be classified (their rows carry the reason)."""
    output: Path | None
    """The file written (this rank's part when sharded), None for stdout."""
    merged: Path | None = None
    """The merged output, when this process merged the shards."""


@dataclass(frozen=True)
class Input:
    """One input as the user named it (or as found in a folder), or why it has no image."""

    path: str
    """File path (or the folder, CSV list ... the error is about)."""
    error: str | None = None
    """Set when there is nothing to decode: an empty folder, an unreadable folder."""


MAX_LIST_BYTES = 64 * 1024 * 1024
"""Largest CSV list of inputs read (about half a million paths)."""


def _read_csv_list(path: Path) -> list[str]:
    try:
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            raise PneumoError(
                f"{printable(str(path))}: CSV list too large ({size / 2**20:.0f} MiB, "
                f"limit {MAX_LIST_BYTES / 2**20:.0f} MiB); split it"
            )
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in fields:
                raise PneumoError(
                    f"{printable(str(path))}: a CSV of inputs needs a 'path' column "
                    f"(found: {', '.join(fields) or 'no header'})"
                )
            key = (reader.fieldnames or [])[fields.index("path")]
            rows = [
                row[key].strip()
                for row in reader
                if isinstance(row.get(key), str) and row[key].strip()
            ]
    except UnicodeDecodeError:
        raise PneumoError(f"{printable(str(path))}: not a UTF-8 text CSV") from None
    except csv.Error as exc:
        raise PneumoError(f"{printable(str(path))}: not a readable CSV ({exc})") from None
    except OSError as exc:
        raise PneumoError(f"{printable(str(path))}: cannot read ({exc.strerror or exc})") from None
    # relative paths in a list are relative to the list, so lists can travel with their images
    return [p if Path(p).is_absolute() else str(path.parent / p) for p in rows]


def _scan_folder(folder: Path) -> list[Input]:
    """Images under ``folder`` (recursively, symlinked folders not followed): files named like
    an image (kept even when unreadable, so they get an error row) and files of any name whose
    content is an image (DICOM exports are often named ``IM000001``)."""
    found: list[Input] = []
    problems: list[Input] = []

    def unreadable(exc: OSError) -> None:
        where = printable(str(exc.filename or folder))
        problems.append(Input(where, f"{where}: cannot list folder ({exc.strerror or exc})"))

    stack = [str(folder)]  # by hand, not os.walk: no recursion limit on deep trees
    while stack:
        root = stack.pop()
        try:
            entries = list(os.scandir(root))
        except OSError as exc:
            unreadable(exc)
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry.path)
            elif Path(entry.name).suffix.lower() in INPUT_SUFFIXES or sniff_file(entry.path):
                found.append(Input(entry.path))
    found.sort(key=lambda x: x.path)
    if not found and not problems:
        shown = printable(str(folder))
        return [
            Input(
                str(folder),
                f"{shown}: no images found in this folder (JPEG, PNG or DICOM, any file name)",
            )
        ]
    return found + problems


def collect_inputs(paths: list[str | Path]) -> list[Input]:
    """Expand files, folders (recursively: JPEG, PNG, DICOM, recognised by content) and CSV
    lists with a ``path`` column into one ordered list. Every input the user named appears:
    missing files and empty folders stay in the list with their error."""
    out: list[Input] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += _scan_folder(path)
        elif path.suffix.lower() == ".csv" and path.is_file():
            listed = _read_csv_list(path)
            shown = printable(str(path))
            out += [Input(p) for p in listed] or [
                Input(str(raw), f"{shown}: the list has no paths")
            ]
        else:
            out.append(Input(str(raw)))
    return out


def shard_path(output: Path, rank: int) -> Path:
    """``out.csv`` -> ``out.rank{rank}.csv``."""
    return output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def _done_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.stem}.rank{rank}.done.json")


def _inputs_digest(inputs: list[Input]) -> str:
    text = "\n".join(i.path for i in inputs)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _marker(path: Path) -> dict:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PneumoError(f"{path}: unreadable part marker ({exc}); run that part again") from None
    if not isinstance(marker, dict):
        raise PneumoError(f"{path}: unreadable part marker; run that part again")
    return marker


def merge_shards(
    output: str | Path, world: int | None = None, *, digest: str | None = None
) -> Path:
    """Merge ``OUT.rank{i}.*`` parts into ``OUT``, restoring the original input order.

    ``world`` defaults to the number of parts found. Parts from a run over different inputs
    (their ``.done.json`` markers disagree) are refused rather than mixed.
    """
    output = Path(output)
    if world is None:
        markers = sorted(output.parent.glob(f"{output.stem}.rank*.done.json"))
        if not markers:
            raise PneumoError(f"no parts of {output} found ({shard_path(output, 0).name} ...)")
        try:
            world = int(_marker(markers[0]).get("world", len(markers)))
        except (TypeError, ValueError):
            raise PneumoError(
                f"{markers[0]}: unreadable part marker; run that part again"
            ) from None
    parts, digests = [], set()
    for rank in range(world):
        done = _done_path(output, rank)
        if not done.is_file():
            raise PneumoError(f"{output}: part {rank} of {world} is missing ({done.name})")
        marker = _marker(done)
        if marker.get("world") != world:
            raise PneumoError(f"{done}: written for {marker.get('world')} shards, not {world}")
        digests.add(marker.get("inputs"))
        parts.append(read_rows(shard_path(output, rank)))
    if len(digests) != 1 or (digest is not None and digests != {digest}):
        raise PneumoError(f"{output}: the parts come from runs over different inputs")
    rows = []
    for k in range(max(len(p) for p in parts)):  # shard r holds inputs r, r+n, r+2n, ...
        rows += [p[k] for p in parts if k < len(p)]
    write_rows(rows, output)
    return output


def _fresh(marker: Path, digest: str, since: float) -> bool:
    try:
        return json.loads(marker.read_text()).get("inputs") == digest and (
            marker.stat().st_mtime >= since
        )
    except (OSError, json.JSONDecodeError):
        return False


def _wait_and_merge(
    output: Path, world: int, digest: str, timeout: float, since: float
) -> Path | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # parts left over from an earlier run over the same inputs are older than this run
        if all(_fresh(_done_path(output, r), digest, since) for r in range(world)):
            return merge_shards(output, world, digest=digest)
        time.sleep(0.2)
    log.warning(
        "not every shard finished within %.0f s: merge later with "
        "`pneumo predict --merge --output %s`",
        timeout,
        output,
    )
    return None


def stream_predictions(predictor, inputs: list[Input]) -> Iterator:
    """One Prediction per input, in order, as the pipeline produces them; inputs that were
    already known to be bad (an empty folder) get their error without being decoded."""
    from pneumo.inference.base import Prediction

    good = (x.path for x in inputs if x.error is None)
    results = (p for chunk in predictor.iter_predict_sources(good) for p in chunk)
    for x in inputs:
        yield Prediction(source=x.path, error=x.error) if x.error is not None else next(results)


def predict_files(
    paths: list[str | Path],
    *,
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    output: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
    shard: str | None = None,
    merge_timeout: float = 3600.0,
    progress: bool = True,
) -> PredictSummary:
    """Classify chest X-rays: files, folders (recursive; JPEG, PNG, DICOM) or CSV lists with a
    `path` column. Writes path, class, probability, confidence, uncertain, ood, ood_score and
    error per input, as CSV or JSON (by the --output suffix; CSV on stdout without --output).
    A file that cannot be read gets its reason in the error column; the others go on.

    Scale-out: under torchrun (RANK/WORLD_SIZE) or with --shard i/n each process takes every
    n-th input and writes OUT.rank{i}.csv; rank 0 merges the parts into OUT when all are done
    (or run `pneumo predict --merge --output OUT` later).
    """
    from pneumo.inference.engine import load_predictor

    if not 1 <= batch_size <= 4096:
        raise PneumoError(f"--batch-size must be in 1..4096, got {batch_size}")
    if threads is not None and not 1 <= threads <= 1024:
        raise PneumoError(f"--threads must be in 1..1024, got {threads}")
    sh = Shard.parse(shard)
    output = Path(output) if output is not None else None
    if output is not None:
        output_format(output)
        if output.is_dir():  # found now, not after classifying every input
            raise PneumoError(f"{printable(str(output))}: is a folder; give a .csv or .json file")
    if sh.world > 1 and output is None:
        raise PneumoError("sharded prediction needs --output (each process writes its part)")
    started = time.time() - 60.0  # allow for clock skew between the processes' file writes
    if sh.world > 1:
        _done_path(output, sh.rank).unlink(missing_ok=True)
    inputs = collect_inputs(paths)
    if not inputs:
        raise PneumoError("no inputs: give image files, folders or a CSV with a 'path' column")
    mine = inputs[sh.rank :: sh.world]
    if threads is None and sh.world > 1:
        from pneumo.inference.base import default_threads

        local = int(os.environ.get("LOCAL_WORLD_SIZE", sh.world))
        threads = max(1, default_threads() // local)
    predictor = load_predictor(
        model, backend=backend, precision=precision, threads=threads, batch_size=batch_size
    )
    target = output if sh.world == 1 else shard_path(output, sh.rank)
    errors = 0
    with (
        progress_bar(
            len(mine), "predict", enabled=progress and bool(mine), transient=True
        ) as advance,
        RowWriter(target) as writer,
    ):
        for pred in stream_predictions(predictor, mine):
            errors += pred.error is not None
            writer.write(prediction_row(pred))
            advance(1)
    summary = PredictSummary(total=len(mine), errors=errors, output=target)
    if sh.world == 1:
        return summary
    digest = _inputs_digest(inputs)
    marker = {"rank": sh.rank, "world": sh.world, "inputs": digest, "rows": len(mine)}
    _done_path(output, sh.rank).write_text(json.dumps(marker))
    if sh.rank == 0:
        summary.merged = _wait_and_merge(output, sh.world, digest, merge_timeout, started)
    return summary
