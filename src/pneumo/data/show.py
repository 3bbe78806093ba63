"""A grid of example images per class (the seed's ``show_images``), saved as a PNG. Reproducible:
the same seed picks the same files."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.data.check import BadFile
from pneumo.data.decode import load_grey
from pneumo.data.discover import ImageRecord, find_images
from pneumo.errors import DataError, ImageDecodeError

log = logging.getLogger(__name__)

MAX_PER_CLASS = 20
"""More tiles than this per row are unreadable in a PNG."""
_TILE_PIXELS = 256
"""Images are decoded at about this size: a grid tile never needs more."""


@dataclass(frozen=True)
class ShowResult:
    """What ``show_images`` drew."""

    output: Path
    """The PNG written."""
    shown: dict[str, list[ImageRecord]]
    """The images drawn, per class, left to right."""
    skipped: list[BadFile] = field(default_factory=list)
    """Picked files that could not be decoded (replaced by the next pick)."""


def pick_images(records: list[ImageRecord], seed: int) -> dict[str, list[ImageRecord]]:
    """Every record of each class in a seeded random order (one independent order per class, so
    adding images of one class does not change the picks of the other)."""
    picks = {}
    for label in CLASS_NAMES:
        pool = sorted((r for r in records if r.label == label), key=lambda r: r.relpath)
        random.Random(f"{seed}:{label}").shuffle(pool)
        picks[label] = pool
    return picks


def show_images(
    data: Path,
    output: Path,
    *,
    split: str = "train",
    per_class: int = 4,
    seed: int = 0,
) -> ShowResult:
    """Save a PNG grid of random example images, N per class, titled with their labels.

    One row per class, each image titled with its label and file name. The seed fixes which
    files are picked, so the same seed draws the same grid. A picked file that cannot be
    decoded is reported with its reason and replaced by the next pick.
    """
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise DataError(f"--per-class must be between 1 and {MAX_PER_CLASS}, got {per_class}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = find_images(data, splits=[split])
    shown: dict[str, list[ImageRecord]] = {}
    images: dict[str, list] = {}
    skipped: list[BadFile] = []
    for label, pool in pick_images(records, seed).items():
        shown[label], images[label] = [], []
        for record in pool:
            if len(shown[label]) == per_class:
                break
            try:
                img = load_grey(record.path, draft_size=(_TILE_PIXELS, _TILE_PIXELS))
            except ImageDecodeError as exc:
                log.warning("skipping %s: %s", record.relpath, exc.reason)
                skipped.append(BadFile(record.relpath, record.split, record.label, exc.reason))
                continue
            img.thumbnail((_TILE_PIXELS, _TILE_PIXELS))
            shown[label].append(record)
            images[label].append(img)
        if len(shown[label]) < per_class:
            log.warning("%s/%s has only %d readable image(s)", split, label, len(shown[label]))
    # A Figure with its own Agg canvas: headless, and no global pyplot state (thread-safe).
    fig = Figure(figsize=(2.2 * per_class, 2.5 * len(CLASS_NAMES)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(CLASS_NAMES), per_class, squeeze=False)
    for row, label in enumerate(CLASS_NAMES):
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(images[label]):
                ax.imshow(images[label][col], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{label}\n{shown[label][col].path.name}", fontsize=7)
            elif col == 0:
                ax.text(0.5, 0.5, f"no readable\n{label} image", ha="center", va="center")
    fig.suptitle(f"{split}: {per_class} random image(s) per class, seed {seed}", fontsize=10)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png")
    return ShowResult(output, shown, skipped)
