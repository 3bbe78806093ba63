"""What the page does, apart from drawing it: check the input, classify, explain, store.

Everything here is plain Python taking its collaborators as arguments (predictor, Grad-CAM,
session factory, fetcher), so tests drive it without a browser. Patient names are never logged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pneumo.app.intake import InputItem
from pneumo.app.settings import AppSettings
from pneumo.errors import PneumoError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from pneumo.inference.base import Prediction, Predictor
    from pneumo.inference.cam import GradCam
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

DISPLAY_NAMES = {"NORMAL": "Normal", "PNEUMONIA": "Pneumonia"}
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


_MARKDOWN = {c: "\\" + c for c in "\\`*[]<>$~"}


def md(text: object) -> str:
    """``text`` with the Markdown that could act escaped (links and images, HTML, code,
    emphasis, LaTeX ``$``), for names and messages put into Streamlit elements that render
    Markdown: an upload or URL named ``![x](https://...)`` must not load an image from
    elsewhere or fake a result on the page. Plain names and messages are left as they are."""
    return " ".join(str(text).split()).translate(str.maketrans(_MARKDOWN))


def display_label(label: str | None) -> str:
    return DISPLAY_NAMES.get(label or "", label or "")


# --- classifying and storing --------------------------------------------------------------------


def _thumbnail(data: bytes, settings: AppSettings):
    from pneumo.data.decode import load_grey

    img = load_grey(
        data, draft_size=(THUMBNAIL_SIDE, THUMBNAIL_SIDE), max_pixels=settings.max_pixels
    )
    img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return img


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def classify_and_store(
    *,
    items: list[InputItem],
    patient_name: str,
    patient_id: str = "",
    predictor: Predictor,
    session_factory: sessionmaker,
    session_id: str,
    user: str = "",
    cam: GradCam | None = None,
    settings: AppSettings | None = None,
) -> Submission:
    """Classify every good item, store one record each, add heatmaps; bad items keep their own
    error and never stop the others. Raises PatientInputError for a missing or bad name and
    PneumoError when there is nothing to classify."""
    from pneumo.storage import repository as repo

    settings = settings or AppSettings()
    name, code = repo.clean_patient(patient_name, patient_id)
    if not items:
        raise PneumoError("Add at least one image: upload files or enter an image URL.")
    start = time.perf_counter()
    version = model_version(predictor.metadata)
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

    _store(results, name, code, version, session_factory, session_id, user)
    if cam is not None:
        add_heatmaps(results, items, cam, predictor.metadata, settings)
    seconds = time.perf_counter() - start
    log.info(
        "classified %d of %d images in %.2f s (session %s)",
        sum(r.prediction is not None for r in results),
        len(results),
        seconds,
        session_id[:8],
    )
    return Submission(name, code, results, seconds, version)


def _store(results, name, code, version, session_factory, session_id, user) -> None:
    """One commit per record, so a failing row never takes the others with it."""
    from pneumo.storage import repository as repo
    from pneumo.storage.db import describe_db_error

    stored = 0
    with session_factory() as s:
        try:
            patient = repo.get_or_create_patient(s, name=name, patient_code=code)
            s.commit()
        except Exception as exc:  # noqa: BLE001 - one failing row never drops the others
            log.error(
                "cannot store the patient (session %s): %s", session_id[:8], describe_db_error(exc)
            )
            s.rollback()
            for res in results:
                if res.prediction is not None:
                    res.store_error = "not saved: the database is unavailable"
            return
        for res in results:
            p = res.prediction
            if p is None:
                continue
            try:
                rec = repo.add_record(
                    s,
                    patient=patient,
                    file_name=res.name,
                    sha256=res.sha256,
                    prediction=p.label,
                    probability=p.probability,
                    threshold=p.threshold,
                    uncertain=p.uncertain,
                    ood=p.ood,
                    model_version=version,
                    session_id=session_id,
                    user=user,
                )
                s.commit()
                res.record_id = rec.id
                stored += 1
            except Exception as exc:  # noqa: BLE001 - one failing row never drops the others
                log.error(
                    "cannot store a record (session %s): %s", session_id[:8], describe_db_error(exc)
                )
                s.rollback()
                res.store_error = "not saved: database error"
        try:
            errors = sum(r.error is not None for r in results)
            repo.add_audit(
                s,
                action="classify",
                session_id=session_id,
                user=user,
                patient=patient,
                detail=f"{stored} stored, {errors} failed",
            )
            s.commit()
        except Exception as exc:  # noqa: BLE001 - one failing row never drops the others
            log.error(
                "cannot write the audit row (session %s): %s",
                session_id[:8],
                describe_db_error(exc),
            )
            s.rollback()


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


# --- history ------------------------------------------------------------------------------------


@dataclass
class PatientHistory:
    """One patient and their stored records, newest first, as plain rows for a table."""

    name: str
    patient_id: str
    rows: list[dict]


class HistoryUnavailable(PneumoError):
    """The database could not be read (the message is for the page; details go nowhere)."""


def patient_history(
    *, session_factory: sessionmaker, query: str, session_id: str, user: str = ""
) -> list[PatientHistory]:
    """Patients matching ``query`` (name part or exact ID) with their records; each patient
    shown is written to the audit trail as viewed. Raises HistoryUnavailable when the database
    cannot be read or the viewing cannot be audited."""
    try:
        return _patient_history(session_factory, query, session_id, user)
    except Exception as exc:  # noqa: BLE001 - shown as a message, logged by class only
        from pneumo.storage.db import describe_db_error

        log.error(
            "cannot read the history (session %s): %s", session_id[:8], describe_db_error(exc)
        )
        raise HistoryUnavailable(
            "The patient history is unavailable: the database cannot be read right now."
        ) from None


def _patient_history(session_factory, query: str, session_id: str, user: str):
    from pneumo.storage import repository as repo

    out = []
    with session_factory() as s:
        for patient in repo.find_patients(s, query=query):
            rows = [
                {
                    "time (UTC)": r.created.strftime("%Y-%m-%d %H:%M:%S") if r.created else "",
                    "file": r.file_name,
                    "result": "not a chest X-ray?" if r.ood else display_label(r.prediction),
                    "P(pneumonia)": round(r.probability, 4),
                    "threshold": round(r.threshold, 4),
                    "uncertain": r.uncertain,
                    "model": r.model_version,
                    "sha256": r.sha256[:16],
                    "user": r.user,
                }
                for r in repo.patient_records(s, patient_id=patient.id)
            ]
            repo.add_audit(
                s,
                action="view_history",
                session_id=session_id,
                user=user,
                patient=patient,
                detail=f"{len(rows)} records",
            )
            out.append(PatientHistory(patient.name, patient.patient_code, rows))
        s.commit()
    return out


def audit_export(
    *,
    session_factory: sessionmaker,
    results: list[ImageResult],
    session_id: str,
    user: str,
    kind: str,
) -> None:
    """Note in the audit trail that a session's results were exported (CSV or PDF); a failure
    is logged (by class) and does not stop the export the user asked for."""
    try:
        _audit_export(session_factory, results, session_id, user, kind)
    except Exception as exc:  # noqa: BLE001 - the export itself still works
        from pneumo.storage.db import describe_db_error

        log.error("cannot audit an export (session %s): %s", session_id[:8], describe_db_error(exc))


def _audit_export(session_factory, results, session_id: str, user: str, kind: str) -> None:
    from sqlalchemy import select

    from pneumo.storage import repository as repo
    from pneumo.storage.tables import Record

    ids = [r.record_id for r in results if r.record_id is not None]
    with session_factory() as s:
        patient = None
        if ids:
            rec = s.scalars(select(Record).where(Record.id == ids[0])).first()
            patient = rec.patient if rec else None
        repo.add_audit(
            s,
            action="export",
            session_id=session_id,
            user=user,
            patient=patient,
            detail=f"{kind}, {len(results)} images",
        )
        s.commit()
