"""Prediction rows as CSV, JSON or Parquet, written as they come: a run over a million files
holds one row (one row group for Parquet) in memory, and a reader never sees half a file
(written beside it, then renamed into place). The local and the Ray path write through the
same writer, so they accept the same formats and write the same bytes."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from pneumo.data.decode import printable
from pneumo.errors import PneumoError
from pneumo.files import temporary_beside
from pneumo.inference.predictor import Column, Prediction, field_types, shown_fields


def _columns() -> list[tuple[str, Column]]:
    """(field name, column) of each ``Prediction`` field written to the output, in order."""
    return [(f.name, f.metadata["column"]) for f in shown_fields() if f.metadata["column"]]


COLUMNS = tuple(column.name for _, column in _columns())
"""Output columns, in order, for CSV, JSON and Parquet alike (from ``Prediction``'s fields)."""

FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
"""Output formats by file suffix, for ``pneumo predict`` with or without ``--ray``."""
PARQUET_GROUP = 4096
"""Rows per Parquet row group (about 1 MiB): the memory a Parquet output holds while writing."""


def arrow_schema():
    """The Parquet (Arrow) types of ``COLUMNS``, from the fields' types; empty cells are
    nulls."""
    pa = _pyarrow()
    arrow = {str: pa.string(), float: pa.float64(), bool: pa.bool_()}
    types = field_types()
    return pa.schema([(column.name, arrow[types[name]]) for name, column in _columns()])


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise PneumoError("Parquet output needs pyarrow: pip install pyarrow") from None
    return pyarrow


def prediction_row(p: Prediction) -> dict:
    """One Prediction as an output row, each cell as its ``Column`` says (rounded, escaped,
    blank where it does not apply: a film not assessed has no class, probability, confidence
    or uncertain flag, only its reason)."""
    row = {}
    for name, column in _columns():
        value = getattr(p, name)
        if column.blank_unless is not None and not getattr(p, column.blank_unless):
            value = None
        elif value is not None and column.digits is not None:
            value = round(value, column.digits)
        elif value is not None and column.escape:
            value = printable(value)
        row[column.name] = value
    return row


def output_format(path: Path | None) -> str:
    """``csv``, ``json`` or ``parquet`` by suffix (CSV for stdout); anything else is refused."""
    if path is None:
        return "csv"
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise PneumoError(
            f"{printable(str(path))}: output must end in {', '.join(FORMATS)}"
        ) from None


def check_output(output: Path | None) -> None:
    """Refuse, before any work, an output whose format is unknown or that is a folder."""
    if output is not None:
        output_format(output)
        if output.is_dir():
            raise PneumoError(
                f"{printable(str(output))}: is a folder; give a {', '.join(FORMATS)} file"
            )


class _Stdout:
    """sys.stdout that escapes what its encoding cannot show (a file name in Latin-1 on a
    UTF-8 terminal), instead of failing on the row."""

    def write(self, text: str) -> None:
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))


class RowWriter:
    """Writes rows to ``output`` (CSV, JSON or Parquet by suffix; CSV on stdout for None) as
    they come. Use as a context manager: the file appears under its name only when the block
    succeeds."""

    def __init__(self, output: Path | None):
        self.output = output
        self.format = output_format(output)
        self.rows = 0
        self._tmp: Path | None = None
        self._file: TextIO | _Stdout | None = None
        self._parquet = None
        self._pending: list[dict] = []

    def __enter__(self) -> RowWriter:
        if self.format == "parquet":
            return self._open_parquet()
        if self.output is None:
            self._file = _Stdout()
        else:
            try:
                # a visible OUT.<pid>-<random>.tmp beside OUT, as before: a long run shows its progress
                self._tmp = temporary_beside(self.output, prefix=f"{self.output.name}.")
                self._file = open(  # noqa: SIM115 - closed in __exit__
                    self._tmp,
                    "w",
                    buffering=1,  # line-buffered: each row reaches the disk as it comes
                    encoding="utf-8",
                    errors="backslashreplace",
                    newline="",
                )
            except OSError as exc:
                raise self._cannot_write(exc) from None
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS, lineterminator="\n")
            self._csv.writeheader()
        else:
            self._file.write("[")
        return self

    def _open_parquet(self) -> RowWriter:
        pa = _pyarrow()
        try:
            self._tmp = temporary_beside(self.output, prefix=f"{self.output.name}.")
            self._parquet = pa.parquet.ParquetWriter(self._tmp, arrow_schema())
        except OSError as exc:
            raise self._cannot_write(exc) from None
        return self

    def write(self, row: dict) -> None:
        if self.format == "parquet":
            self._pending.append(row)
            if len(self._pending) >= PARQUET_GROUP:
                self._flush_parquet()
        elif self.format == "csv":
            self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self._file.write(("," if self.rows else "") + "\n " + json.dumps(row))
        self.rows += 1

    def write_table(self, table) -> None:
        """Rows as an Arrow table with ``COLUMNS`` (what the Ray path gets back)."""
        if self.format != "parquet":
            for row in table.to_pylist():
                self.write(row)
            return
        self._flush_parquet()
        self._parquet.write_table(table.select(list(COLUMNS)).cast(arrow_schema()))
        self.rows += table.num_rows

    def _flush_parquet(self) -> None:
        if self._pending:
            pa = _pyarrow()
            self._parquet.write_table(pa.Table.from_pylist(self._pending, schema=arrow_schema()))
            self._pending.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._parquet is not None:
            self._close_parquet(exc_type)
            return
        assert self._file is not None
        try:
            if exc_type is None and self.format == "json":
                self._file.write("\n]\n")
            if self._tmp is None:
                sys.stdout.flush()
                return
            self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.output)  # readers never see half a file
        except OSError as exc:
            if exc_type is None:
                raise self._cannot_write(exc) from None
        finally:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.unlink()

    def _close_parquet(self, exc_type) -> None:
        try:
            if exc_type is None:
                self._flush_parquet()
            self._parquet.close()
            if exc_type is None:
                os.replace(self._tmp, self.output)
        except OSError as exc:
            if exc_type is None:
                raise self._cannot_write(exc) from None
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def _cannot_write(self, exc: OSError) -> PneumoError:
        return PneumoError(f"{printable(str(self.output))}: cannot write ({exc.strerror or exc})")


def read_rows(path: Path) -> list[dict]:
    """Rows written by ``RowWriter`` (CSV values stay strings)."""
    try:
        if output_format(path) == "parquet":
            return _pyarrow().parquet.read_table(path).to_pylist()
        if output_format(path) == "json":
            return json.loads(path.read_text(encoding="utf-8"))
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as exc:
        raise PneumoError(f"{path}: unreadable part ({exc}); run that part again") from None
