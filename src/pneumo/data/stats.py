"""What is in the data set: images per split and class with their share of the split (the seed's
summary table), image sizes and modes, and the files that cannot be read."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.data.check import BadFile, check_records
from pneumo.data.discover import SPLITS, data_root_of, find_images

FORMATS = ("table", "csv", "markdown", "json")


@dataclass(frozen=True)
class ClassCount:
    """Readable images of one class in one split."""

    split: str
    """Split name (train, val, test)."""
    label: str
    """Class name."""
    count: int
    """Number of readable images."""
    percent: float
    """Share of the split's readable images, in percent."""


@dataclass(frozen=True)
class SizeSummary:
    """Image sizes in pixels over all readable images."""

    width_min: int
    """Smallest width."""
    width_median: float
    """Median width."""
    width_max: int
    """Largest width."""
    height_min: int
    """Smallest height."""
    height_median: float
    """Median height."""
    height_max: int
    """Largest height."""


@dataclass(frozen=True)
class DataStats:
    """Summary of a data set folder."""

    root: str
    """The data root that holds the split folders."""
    counts: list[ClassCount]
    """One row per split and class, splits in train, val, test order."""
    split_totals: dict[str, int]
    """Readable images per split."""
    total: int
    """Readable images in all splits."""
    sizes: SizeSummary | None
    """Width and height summary (None when nothing is readable)."""
    modes: dict[str, int] = field(default_factory=dict)
    """Images per Pillow mode as stored (L, RGB, ...)."""
    formats: dict[str, int] = field(default_factory=dict)
    """Images per file format (JPEG, PNG)."""
    unreadable: list[BadFile] = field(default_factory=list)
    """Files found in the class folders that cannot be read, with the reason; not counted."""

    def to_dict(self) -> dict:
        return asdict(self)


def dataset_stats(data: Path) -> DataStats:
    """Count the images per split and class, with each class's share of its split.

    Also summarises image sizes (min, median, max width and height) and modes. Every file's
    header and end are checked without decoding the pixels (about a second for the 5,232
    images of the shared copy); unreadable files are listed with their reason and not counted.
    """
    records = find_images(data)
    good, bad = check_records(records)
    per_class = Counter((r.split, r.label) for r, _ in good)
    present = [s for s in SPLITS if any(r.split == s for r in records)]
    split_totals = {s: sum(per_class[(s, c)] for c in CLASS_NAMES) for s in present}
    counts = [
        ClassCount(
            s,
            c,
            per_class[(s, c)],
            round(100.0 * per_class[(s, c)] / split_totals[s], 2) if split_totals[s] else 0.0,
        )
        for s in present
        for c in CLASS_NAMES
    ]
    sizes = None
    if good:
        widths = [info.width for _, info in good]
        heights = [info.height for _, info in good]
        sizes = SizeSummary(
            min(widths),
            float(statistics.median(widths)),
            max(widths),
            min(heights),
            float(statistics.median(heights)),
            max(heights),
        )
    return DataStats(
        root=str(data_root_of(data)),
        counts=counts,
        split_totals=split_totals,
        total=sum(split_totals.values()),
        sizes=sizes,
        modes=dict(Counter(info.mode for _, info in good).most_common()),
        formats=dict(Counter(info.format for _, info in good).most_common()),
        unreadable=bad,
    )


def count_rows(stats: DataStats) -> list[tuple[str, str, int, str]]:
    """The seed's table: (split, class, count, percent) per class, then a total per split."""
    rows: list[tuple[str, str, int, str]] = []
    for split, total in stats.split_totals.items():
        for c in stats.counts:
            if c.split == split:
                rows.append((split, c.label, c.count, f"{c.percent:.2f}%"))
        rows.append((split, "total", total, "100.00%" if total else "0.00%"))
    rows.append(("all", "total", stats.total, ""))
    return rows


def _size_text(s: SizeSummary) -> list[tuple[str, str, str, str]]:
    return [
        ("width", str(s.width_min), f"{s.width_median:g}", str(s.width_max)),
        ("height", str(s.height_min), f"{s.height_median:g}", str(s.height_max)),
    ]


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def to_csv(stats: DataStats) -> str:
    """The count table as CSV: split, label, count, percent (no % sign)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("split", "label", "count", "percent"))
    for split, label, count, percent in count_rows(stats):
        writer.writerow((split, label, count, percent.rstrip("%")))
    return out.getvalue()


def to_markdown(stats: DataStats) -> str:
    """Count table, sizes, modes and unreadable files as Markdown."""
    lines = ["| split | class | images | share |", "|---|---|---:|---:|"]
    lines += [f"| {s} | {c} | {n} | {p} |" for s, c, n, p in count_rows(stats)]
    if stats.sizes:
        lines += ["", "| pixels | min | median | max |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _size_text(stats.sizes)]
    lines += ["", f"Modes: {_counts(stats.modes)}. Formats: {_counts(stats.formats)}."]
    lines.append(f"Unreadable files (not counted): {len(stats.unreadable)}")
    lines += [f"- `{b.path}`: {b.reason}" for b in stats.unreadable]
    return "\n".join(lines) + "\n"


def to_json(stats: DataStats) -> str:
    """Everything, as JSON."""
    return json.dumps(stats.to_dict(), indent=2) + "\n"


def to_text(stats: DataStats) -> str:
    """Plain-text table for files and terminals without colour."""
    lines = [f"{'split':<6} {'class':<10} {'images':>7} {'share':>8}"]
    lines += [f"{s:<6} {c:<10} {n:>7} {p:>8}" for s, c, n, p in count_rows(stats)]
    if stats.sizes:
        lines += ["", f"{'pixels':<7} {'min':>6} {'median':>7} {'max':>6}"]
        lines += [f"{a:<7} {b:>6} {c:>7} {d:>6}" for a, b, c, d in _size_text(stats.sizes)]
    lines += ["", f"modes: {_counts(stats.modes)}; formats: {_counts(stats.formats)}"]
    lines.append(f"unreadable files (not counted): {len(stats.unreadable)}")
    lines += [f"  {b.path}: {b.reason}" for b in stats.unreadable]
    return "\n".join(lines) + "\n"


RENDERERS = {"table": to_text, "csv": to_csv, "markdown": to_markdown, "json": to_json}
SUFFIX_FORMATS = {".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".json": "json"}


def render(stats: DataStats, fmt: str) -> str:
    """``stats`` in one of FORMATS."""
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](stats)
