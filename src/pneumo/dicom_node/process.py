"""One received film through the same engine as ``pneumo predict``: decoded by
``pneumo.data.dicom``, judged in scope by ``pneumo.data.dicom_scope`` and the
out-of-distribution checks, classified, stored as a record of the patient named in its header,
and turned into the result objects for PACS. Logs name instances by UID, never the patient."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from pneumo.dicom_node.results import MANUFACTURER, build_overlay, build_sr, finding
from pneumo.errors import PneumoError
from pneumo.inference.predictor import Prediction
from pneumo.storage import repository as repo
from pneumo.storage.db import describe_db_error
from pneumo.storage.tables import Record

if TYPE_CHECKING:
    from pydicom import Dataset
    from sqlalchemy.orm import sessionmaker

    from pneumo.inference.predictor import Predictor

log = logging.getLogger(__name__)

NODE_SESSION = "dicom-node"
"""``session_id`` of every record the node stores (the app's sessions are random hex)."""
UNNAMED = "(no name in DICOM header)"
"""Patient name stored for a film whose header leaves PatientName empty."""


@dataclass
class Outcome:
    """What became of one received instance."""

    sop_uid: str
    prediction: Prediction | None
    """None when the instance was not classified at all (no pixels, our own result)."""
    results: list
    """The DICOM objects to send back (SR first, then the overlay when there is one)."""
    note: str = ""
    """Why nothing was classified or sent, for the log."""


def already_done(session_factory: sessionmaker, sop_uid: str) -> bool:
    """Whether this SOP Instance already has a record made by the node."""
    with session_factory() as s:
        stmt = select(Record.id).where(
            Record.session_id == NODE_SESSION, Record.file_name == sop_uid
        )
        return s.scalars(stmt.limit(1)).first() is not None


def classify_instance(
    raw: bytes,
    predictor: Predictor,
    cam: Predictor | None,
    session_factory: sessionmaker,
) -> Outcome:
    """Classify one received DICOM file (its bytes as stored in the inbox), store its record
    and build its results; a film that cannot be classified still gets an SR saying so."""
    from pneumo.data.dicom import read_header

    header = read_header(raw, "received instance", pixels=True)  # pixels read, not decoded
    meta_info = getattr(header, "file_meta", None)
    caller = str(getattr(meta_info, "SourceApplicationEntityTitle", "") or "").strip()
    sop_uid = str(header.get("SOPInstanceUID", ""))
    label = f"instance {sop_uid}"  # what errors and logs call it: a UID, not a name
    if header.get("Manufacturer") == MANUFACTURER:
        return Outcome(sop_uid, None, [], "one of pneumo's own results, ignored")
    if "PixelData" not in header and "FloatPixelData" not in header:
        sop_class = getattr(header.get("SOPClassUID"), "name", header.get("SOPClassUID"))
        return Outcome(sop_uid, None, [], f"no pixels ({sop_class}): not an image, refused")
    if not header.get("StudyInstanceUID"):
        return Outcome(sop_uid, None, [], "no Study Instance UID: results could not be filed")
    if already_done(session_factory, sop_uid):
        return Outcome(sop_uid, None, [], "already classified: no second record or result")
    picture = None
    try:
        film = predictor.pipeline.decode(raw, label)
        picture = film.picture
        pred = predictor.predict_arrays(film.array[None], [label], [film.stats])[0]
    except PneumoError as exc:
        pred = Prediction(source=label, threshold=predictor.metadata.threshold, error=str(exc))
    meta = predictor.metadata
    _store(header, raw, pred, meta.version, session_factory, caller)
    results = [build_sr(header, pred, meta, meta.version)]
    if cam is not None and pred.label is not None and picture is not None:
        results.append(_overlay(header, picture, pred, cam, meta.class_names))
    return Outcome(sop_uid, pred, results, finding(pred))


def _overlay(header: Dataset, picture, pred: Prediction, cam: Predictor, class_names):
    from pneumo.inference.cam import overlay

    heat = cam.heatmaps([picture], [class_names.index(pred.label)])[0]
    return build_overlay(header, overlay(picture, heat))


def _person(value) -> str:
    """A DICOM person name as words: ``Doe^John`` -> ``Doe John``."""
    return " ".join(str(value or "").replace("^", " ").split())


def _store(
    header: Dataset, raw: bytes, pred: Prediction, version: str, session_factory, caller: str
) -> None:
    """One record, under the patient of the header, and an audit line with the study."""
    name = _person(header.get("PatientName")) or UNNAMED
    code = str(header.get("PatientID", "") or "")
    study = str(header.get("StudyInstanceUID", ""))
    accession = str(header.get("AccessionNumber", "") or "")
    with session_factory() as s:
        try:
            patient = repo.get_or_create_patient(s, name=name, patient_code=code)
            repo.add_record(
                s,
                patient=patient,
                file_name=str(header.SOPInstanceUID),
                sha256=hashlib.sha256(raw).hexdigest(),
                prediction=pred.label,
                probability=pred.probability,
                threshold=pred.threshold if pred.threshold is not None else 0.5,
                model_version=version,
                session_id=NODE_SESSION,
                uncertain=pred.uncertain,
                ood=pred.label is None,
                user=caller,
            )
            repo.add_audit(
                s,
                action="classify",
                session_id=NODE_SESSION,
                user=caller,
                patient=patient,
                detail=f"DICOM study {study} accession {accession}"[:500],
            )
            s.commit()
        except PneumoError as exc:  # a header the records refuse (e.g. a name too long)
            s.rollback()
            log.warning("record not stored for instance %s: %s", header.SOPInstanceUID, exc)
        except Exception as exc:  # noqa: BLE001 - the result still goes back to PACS
            s.rollback()
            log.error(
                "record not stored for instance %s: %s",
                header.SOPInstanceUID,
                describe_db_error(exc),
            )
