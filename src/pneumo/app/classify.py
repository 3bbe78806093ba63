"""Classify a submission's images and explain them: predictions, thumbnails for the page and
the PDF, heatmap overlays (the class activation map of the served graph). A bad image gets its own error and never stops the others."""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.app import metrics
from pneumo.app.intake import InputItem
from pneumo.app.settings import AppSettings
from pneumo.errors import PneumoError
from pneumo.inference.cam import overlay
from pneumo.inference.pipeline import Film, FilmPipeline, PreparedFilm
from pneumo.inference.predictor import Prediction, Predictor

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 512
"""Longest side of the images kept for the page and the PDF (the originals are not kept). A
large JPEG is decoded at the model's draft size, never below its input size, so its thumbnail
can be smaller."""


SHOWN_IN_COLOUR = 3.0
"""Mean chroma (``InputStats.chroma``) above which the page shows an upload in colour: JPEG
noise on a grey film stays below it."""


@dataclass
class ImageResult:
    """What the page shows for one image (and what the exports contain)."""

    name: str
    error: str | None = None
    prediction: Prediction | None = None
    sha256: str = ""
    thumbnail: bytes | None = None
    """JPEG of the image, longest side THUMBNAIL_SIDE."""
    heatmap: bytes | None = None
    """JPEG of the heatmap overlay, when heatmaps are on and the image was diagnosed."""
    heatmap_note: str | None = None
    heat: np.ndarray | None = None
    """The class activation map behind ``heatmap`` (values in [0, 1]), kept with the film."""
    record_id: int | None = None
    """Database row; None when the image was not stored (see ``store_error``)."""
    store_error: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def diagnosed(self) -> bool:
        p = self.prediction
        return self.error is None and p is not None and p.error is None and not p.ood


@dataclass
class Submission:
    """One click on "Classify": who, what came back, how long it took."""

    patient_name: str
    patient_id: str
    results: list[ImageResult]
    seconds: float
    model_version: str
    outbox_key: str = ""
    """The submission's key in the app's outbox (and in the database rows it becomes)."""


def model_version(meta: ModelMetadata) -> str:
    """A short, stable description of the model for the records, the CSV and the PDF."""
    return meta.version


def classify_images(
    items: list[InputItem], predictor: Predictor, settings: AppSettings
) -> tuple[list[ImageResult], list[Image.Image | None]]:
    """One result per item, in order: the prediction and a thumbnail for every good image, the
    item's or the decoder's error for the others. Also returns the thumbnails as pictures (None
    where there is none) for ``add_heatmaps``: each image is decoded once, for all three."""
    results = [ImageResult(item.name, error=item.error) for item in items]
    pictures: list[Image.Image | None] = [None] * len(items)
    good = [i for i, item in enumerate(items) if item.data is not None and item.error is None]
    pipeline = predictor.pipeline
    with ThreadPoolExecutor(max(1, predictor.decode_workers), "pneumo-app-decode") as pool:
        decoded = list(pool.map(lambda i: _decode(items[i], pipeline, settings), good))
    ready = []
    for i, got in zip(good, decoded, strict=True):
        if isinstance(got, str):
            results[i].error = got
        else:
            ready.append((i, got))
    if ready:
        predictions = predictor.predict_prepared(
            [PreparedFilm(items[i].name, d.film.array, d.film.stats) for i, d in ready]
        )
        for (i, d), pred in zip(ready, predictions, strict=True):
            res = results[i]
            res.prediction = pred
            res.sha256 = hashlib.sha256(items[i].data).hexdigest()
            res.thumbnail = _jpeg(d.shown or d.film.picture)
            pictures[i] = d.film.picture
        metrics.count_predictions(
            predictions, backend=predictor.backend, precision=predictor.precision
        )
    metrics.count_unreadable(sum(r.error is not None for r in results))
    return results, pictures


@dataclass
class _Decoded:
    """What the one decode of an image yields; the full-size pixels are not kept."""

    film: Film
    """The pipeline's film, its picture made a thumbnail (longest side at most
    THUMBNAIL_SIDE): what the model saw, for the heatmaps."""
    shown: Image.Image | None = None
    """The upload in its own colours, for the page and the PDF, when it has any."""


def _decode(item: InputItem, pipeline: FilmPipeline, settings: AppSettings) -> _Decoded | str:
    """Decode ``item`` once by the model's film pipeline, as every face decodes a file, so the
    app gives the API's and the CLI's answer; a failure is that image's error message."""
    try:
        film = pipeline.decode(item.data, item.name, max_pixels=settings.max_pixels)
        film.picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        # show what was uploaded: a colour photograph shown grey looks like a film
        shown = _colour_picture(item.data) if film.stats.chroma > SHOWN_IN_COLOUR else None
    except PneumoError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file is an answer, not a crash
        log.warning("unexpected error decoding an image", exc_info=True)  # no name: PHI
        return f"{item.name}: {exc}"
    return _Decoded(film, shown)


def _colour_picture(data: bytes) -> Image.Image | None:
    """The image in its own colours, upright, longest side THUMBNAIL_SIDE (its size was checked
    by the decoder already); None when only the grey decoder can read it (DICOM)."""
    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            picture = ImageOps.exif_transpose(img).convert("RGB")
    except Exception:  # noqa: BLE001 - the grey picture is shown instead
        return None
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return picture


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def add_heatmaps(
    results: list[ImageResult],
    pictures: list[Image.Image | None],
    cam: Predictor,
    meta: ModelMetadata,
) -> None:
    """Heatmap overlays (``Predictor.heatmaps``) for the diagnosed images (not for ones flagged as not an X-ray), drawn
    on the pictures ``classify_images`` returned."""
    todo = [
        (r, img)
        for r, img in zip(results, pictures, strict=True)
        if r.diagnosed and img is not None
    ]
    if not todo:
        return
    try:
        targets = [meta.class_names.index(r.prediction.label) for r, _ in todo]
        maps = cam.heatmaps([img for _, img in todo], targets)
    except Exception as exc:  # noqa: BLE001 - an explanation failing must not hide a result
        log.exception("heatmap failed")
        for r, _ in todo:
            r.heatmap_note = f"heatmap unavailable ({exc})"
        return
    for (r, img), heat in zip(todo, maps, strict=True):
        r.heatmap = _jpeg(overlay(img, heat))
        r.heat = heat
        if not heat.any():
            r.heatmap_note = "no region stood out for this class"
