"""A torch Dataset over label records, and the DataLoader settings used everywhere. Images are
decoded on demand in worker processes; nothing holds the whole data set in memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from pneumo.data.decode import load_grey
from pneumo.data.discover import ImageRecord
from pneumo.errors import ImageDecodeError

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)


class XrayDataset(Dataset):
    """Yields ``{"image", "label", "path", "patient"}``; an unreadable file yields
    ``{"error", "path"}`` instead, which ``collate_skipping_errors`` drops with a warning."""

    def __init__(
        self,
        records: list[ImageRecord],
        transform: Callable[[Image.Image], np.ndarray],
        *,
        draft_size: tuple[int, int] | None = None,
    ):
        """``transform`` turns a decoded grey film into the network's input; the model owns it
        (``pneumo.models.preprocess``). ``draft_size`` (width, height) lets JPEGs decode at a
        reduced size no smaller than it."""
        self.records = list(records)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        try:
            img = load_grey(record.path, draft_size=self.draft_size)
        except ImageDecodeError as exc:
            return {"error": exc.reason, "path": str(record.path)}
        array = self.transform(img)
        return {
            "image": torch.from_numpy(array),
            "label": record.label_index,
            "path": str(record.path),
            "patient": record.patient,
        }


def collate_skipping_errors(items: list[dict]) -> dict:
    """Batch the readable items; unreadable ones go to ``batch["skipped"]`` as (path, reason).

    Runs in the worker processes, so it only collects: ``XrayLoader`` reports the skipped files
    in the main process, where logging is configured. A batch with no readable item has only
    the ``skipped`` key.
    """
    good = [item for item in items if "error" not in item]
    skipped = [(item["path"], item["error"]) for item in items if "error" in item]
    batch = default_collate(good) if good else {}
    batch["skipped"] = skipped
    return batch


class XrayLoader(DataLoader):
    """DataLoader that logs each skipped file (path and reason) as a warning, keeps the list in
    ``skipped``, and drops batches in which nothing was readable."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped: list[tuple[str, str]] = []

    def __iter__(self):
        for batch in super().__iter__():
            for path, reason in batch.pop("skipped", ()):
                log.warning("skipping %s: %s", path, reason)
                self.skipped.append((path, reason))
            if "image" in batch:
                yield batch


def make_loader(
    dataset: XrayDataset,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    workers: int = 2,
    sampler=None,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = True,
) -> XrayLoader:
    """DataLoader with worker processes, error-skipping collation and a seeded order.

    Workers come from a fork server, not from forking the caller: by the time a loader starts,
    the caller may hold the threads of ONNX Runtime, OpenVINO or a web server (``pneumo adapt``
    after loading its engine, the app, the test suite), and forking a threaded process can crash
    it. The server is a clean process that has imported only this module.
    """
    generator = torch.Generator().manual_seed(seed)
    return XrayLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping_errors,
        generator=generator,
        persistent_workers=persistent_workers and workers > 0,
        drop_last=drop_last,
        multiprocessing_context=_worker_context() if workers > 0 else None,
    )


def _worker_context():
    """The fork server where the platform has one (Linux, macOS), else the platform default."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context
