"""Classify a submission's images and explain them: predictions, thumbnails for the page and
the PDF, Grad-CAM overlays. A bad image gets its own error and never stops the others."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pneumo.app.intake import InputItem
from pneumo.app.settings import AppSettings
from pneumo.data.decode import load_grey
from pneumo.errors import PneumoError

if TYPE_CHECKING:
    from pneumo.inference.base import Prediction, Predictor
    from pneumo.inference.cam import GradCam
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 512
"""Longest side of the images kept for the page and the PDF (the originals are not kept)."""


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
    """JPEG of the Grad-CAM overlay, when heatmaps are on and the image was diagnosed."""
    heatmap_note: str | None = None
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


def model_version(meta: ModelMetadata) -> str:
    """A short, stable description of the model for the records."""
    version = f"{meta.backbone}@{meta.created}"
    if meta.data_fingerprint:
        version += f"+{meta.data_fingerprint[:8]}"
    return version


def classify_images(
    items: list[InputItem], predictor: Predictor, settings: AppSettings
) -> list[ImageResult]:
    """One result per item, in order: the prediction and a thumbnail for every good image,
    the item's or the decoder's error for the others."""
    results = [ImageResult(item.name, error=item.error) for item in items]
    good = [i for i, item in enumerate(items) if item.data is not None and item.error is None]
    predictions = predictor.predict_sources(
        [items[i].data for i in good], [items[i].name for i in good]
    )
    for i, pred in zip(good, predictions, strict=True):
        res = results[i]
        if pred.error:
            res.error = pred.error
            continue
        res.prediction = pred
        res.sha256 = hashlib.sha256(items[i].data).hexdigest()
        try:
            res.thumbnail = _jpeg(_thumbnail(items[i].data, settings))
        except PneumoError as exc:  # pragma: no cover - the predictor decoded it already
            res.heatmap_note = f"cannot show the image: {exc}"
    return results


def _thumbnail(data: bytes, settings: AppSettings):
    img = load_grey(
        data, draft_size=(THUMBNAIL_SIDE, THUMBNAIL_SIDE), max_pixels=settings.max_pixels
    )
    img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return img


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def add_heatmaps(results, items, cam: GradCam, meta: ModelMetadata, settings: AppSettings) -> None:
    """Grad-CAM overlays for the diagnosed images (not for ones flagged as not an X-ray)."""
    from PIL import Image

    from pneumo.inference.cam import overlay

    todo = [(r, i) for r, i in zip(results, items, strict=True) if r.diagnosed and r.thumbnail]
    if not todo:
        return
    try:
        images = [Image.open(io.BytesIO(r.thumbnail)).convert("L") for r, _ in todo]
        targets = [meta.class_names.index(r.prediction.label) for r, _ in todo]
        maps = cam.heatmaps(images, targets)
    except Exception as exc:  # noqa: BLE001 - an explanation failing must not hide a result
        log.exception("Grad-CAM failed")
        for r, _ in todo:
            r.heatmap_note = f"heatmap unavailable ({exc})"
        return
    for (r, _), img, heat in zip(todo, images, maps, strict=True):
        r.heatmap = _jpeg(overlay(img, heat))
        if not heat.any():
            r.heatmap_note = "no region stood out for this class"
