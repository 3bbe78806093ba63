"""Batch prediction on this machine over files, folders and CSV lists, streamed to CSV, JSON
or Parquet.
Past one machine, ``pneumo predict --ray`` hands the same inputs to ``ray_predict``, whose
scheduler retries failed tasks and restarts lost workers."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pneumo.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES, printable, sniff_file
from pneumo.errors import PneumoError
from pneumo.inference.rows import RowWriter, check_output, prediction_row
from pneumo.progress import progress_bar

log = logging.getLogger(__name__)

INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


@dataclass
class PredictSummary:
    """What ``predict_files`` did."""

    total: int
    """Inputs handled."""
    errors: int
    """Inputs that could not be classified (their rows carry the reason)."""
    output: Path | None
    """The file written, None for stdout."""


@dataclass(frozen=True)
class Input:
    """One input as the user named it (or as found in a folder), or why it has no image."""

    path: str
    """File path (or the folder, CSV list ... the error is about)."""
    error: str | None = None
    """Set when there is nothing to decode: an empty folder, an unreadable folder."""

    @property
    def name(self) -> str:
        """``path`` as the rows, errors and logs show it: printable, escaped once here."""
        return printable(self.path)


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


def stream_predictions(predictor, inputs: list[Input]) -> Iterator:
    """One Prediction per input, in order, as the pipeline produces them; inputs that were
    already known to be bad (an empty folder) get their error without being decoded."""
    from pneumo.inference.predictor import Prediction

    good = [x for x in inputs if x.error is None]
    results = (
        p
        for chunk in predictor.iter_predict_sources((x.path for x in good), (x.name for x in good))
        for p in chunk
    )
    for x in inputs:
        yield Prediction(source=x.name, error=x.error) if x.error is not None else next(results)


class HeatmapWriter:
    """Heatmap overlays (PNG) for the diagnosed films of a run, ``batch_size`` films per forward
    pass, named ``<row>-<file stem>.png`` after their row in the output (1-based). A film flagged
    out of distribution or unreadable gets none, as it gets no diagnosis."""

    def __init__(self, predictor, folder: Path):
        self.predictor, self.folder = predictor, folder
        self.pending: list[tuple[int, object, str]] = []
        self.written = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PneumoError(
                f"{printable(str(folder))}: cannot write heatmaps there ({exc.strerror or exc})"
            ) from None

    def add(self, row: int, pred, file: str) -> None:
        """Queue the overlay of ``pred``, the answer for ``file`` (the path as read)."""
        if pred.label is None:
            return
        self.pending.append((row, pred, file))
        if len(self.pending) >= self.predictor.batch_size:
            self.flush()

    def flush(self) -> None:
        from pneumo.data.decode import load_grey
        from pneumo.inference.cam import OVERLAY_SIDE, overlay_png

        todo, self.pending = self.pending, []
        images, kept = [], []
        for row, pred, file in todo:
            try:
                images.append(load_grey(file, draft_size=(OVERLAY_SIDE, OVERLAY_SIDE)))
                kept.append((row, pred, file))
            except PneumoError as exc:  # changed since it was classified: no overlay
                log.warning("no heatmap for row %d: %s", row, type(exc).__name__)
        if not kept:
            return
        names = self.predictor.metadata.class_names
        maps = self.predictor.heatmaps(images, [names.index(p.label) for _, p, _ in kept])
        for (row, _, file), img, cam in zip(kept, images, maps, strict=True):
            stem = Path(file).stem[:100]
            (self.folder / f"{row:06d}-{stem}.png").write_bytes(overlay_png(img, cam))
            self.written += 1


def predict_files(
    paths: list[str | Path],
    *,
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    output: str | Path | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    heatmaps: str | Path | None = None,
) -> PredictSummary:
    """Classify chest X-rays: files, folders (recursive; JPEG, PNG, DICOM) or CSV lists with a
    `path` column. Writes path, class, probability, confidence, uncertain, ood, ood_score,
    ood_reason and error per input, as CSV, JSON or Parquet (by the --output suffix; CSV on
    stdout without --output). A film that does not look like a chest X-ray (ood) gets no class and no
    probability, only its reason; a file that cannot be read gets its reason in the error
    column; the others go on. With --heatmaps DIR, each diagnosed film also gets an overlay of
    the regions that argued for its class (PNG, at most 1024 pixels a side) in DIR.
    """
    from pneumo.inference.engine import load_predictor

    if batch_size is not None and not 1 <= batch_size <= 4096:
        raise PneumoError(f"--batch-size must be in 1..4096, got {batch_size}")
    if threads is not None and not 1 <= threads <= 1024:
        raise PneumoError(f"--threads must be in 1..1024, got {threads}")
    output = Path(output) if output is not None else None
    check_output(output)
    inputs = collect_inputs(paths)
    if not inputs:
        raise PneumoError("no inputs: give image files, folders or a CSV with a 'path' column")
    predictor = load_predictor(
        model, backend=backend, precision=precision, threads=threads, batch_size=batch_size
    )
    maps = HeatmapWriter(predictor, Path(heatmaps)) if heatmaps is not None else None
    errors = 0
    with (
        progress_bar(
            len(inputs), "predict", enabled=progress and bool(inputs), transient=True
        ) as advance,
        RowWriter(output) as writer,
    ):
        for row, (x, pred) in enumerate(
            zip(inputs, stream_predictions(predictor, inputs), strict=True), start=1
        ):
            errors += pred.error is not None
            writer.write(prediction_row(pred))
            if maps is not None:
                maps.add(row, pred, x.path)
            advance(1)
        if maps is not None:
            maps.flush()
    return PredictSummary(total=len(inputs), errors=errors, output=output)
