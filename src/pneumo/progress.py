"""Progress bars (rich) with items/s and ETA, written to stderr so output files stay clean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(
    total: int,
    description: str,
    *,
    unit: str = "img",
    enabled: bool = True,
    transient: bool = False,
) -> Iterator:
    """Yield ``advance(n)``; shows count, rate in ``unit``/s and time remaining (``transient``:
    the bar disappears when done)."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class RateColumn(TextColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s"

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(""),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=transient) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
