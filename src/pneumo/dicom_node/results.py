"""The DICOM objects sent back to PACS, built with highdicom, both in the film's study with new
UIDs: a Comprehensive SR saying what the model found (or that it did not assess the film, and
why) and, for a diagnosed film, a secondary capture of the film with its Grad-CAM overlay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image
    from pydicom import Dataset

    from pneumo.inference.predictor import Prediction
    from pneumo.models.checkpoint import ModelMetadata

MANUFACTURER = "pneumo"
"""Written into every object the node makes; the node ignores objects of its own making."""
RESEARCH_NOTE = "Research use only: not for diagnosis. Not a medical device."
SR_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
SCHEME = "99PNEUMO"
"""Coding scheme of the few concepts no standard names (private, as PS3.16 allows)."""

PRESENT, ABSENT, NOT_ASSESSED = "present", "absent", "not assessed"


def finding(pred: Prediction) -> str:
    """``present``, ``absent`` or ``not assessed`` (out of distribution or unreadable)."""
    if pred.label is None:
        return NOT_ASSESSED
    return PRESENT if pred.label == "PNEUMONIA" else ABSENT


def _codes():
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    return {
        "report": CodedConcept("18748-4", "LN", "Diagnostic imaging report"),
        "finding": codes.DCM.Finding,
        "pneumonia": CodedConcept("233604007", "SCT", "Pneumonia"),
        "presence": CodedConcept("PRESENCE", SCHEME, "Presence of finding"),
        PRESENT: codes.SCT.Present,
        ABSENT: codes.SCT.Absent,
        NOT_ASSESSED: CodedConcept("NOTASSESSED", SCHEME, "Not assessed"),
        "probability": CodedConcept("PROB", SCHEME, "Calibrated probability of pneumonia"),
        "threshold": CodedConcept("THRESHOLD", SCHEME, "Decision threshold"),
        "uncertain": CodedConcept("UNCERTAIN", SCHEME, "Probability in the uncertain band"),
        "ood": CodedConcept("OOD", SCHEME, "Out of distribution for the model"),
        "reason": CodedConcept("REASON", SCHEME, "Reason not assessed"),
        "yes": codes.SCT.Yes,
        "no": codes.SCT.No,
        "algorithm": codes.DCM.AlgorithmName,
        "version": codes.DCM.AlgorithmVersion,
        "comment": codes.DCM.Comment,
        "source": codes.DCM.SourceImage,
        "unit": CodedConcept("1", "UCUM", "no units"),
    }


TYPE2_FROM_FILM = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)
"""Patient and study attributes copied from the film; DICOM lets a film leave them empty, and
highdicom wants them present, so missing ones are added empty."""


def reference(film: Dataset) -> Dataset:
    """The film's header as the results' reference: type-2 attributes present, no pixels."""
    from pydicom import Dataset

    ref = Dataset()
    ref.update({e.tag: e for e in film if e.keyword != "PixelData"})
    ref.file_meta = film.file_meta if hasattr(film, "file_meta") else None
    for keyword in TYPE2_FROM_FILM:
        if keyword not in ref:
            setattr(ref, keyword, None)
    return ref


def _new_uid() -> str:
    from highdicom import UID

    return str(UID())


def build_sr(film: Dataset, pred: Prediction, meta: ModelMetadata, model_version: str):
    """A Comprehensive SR about ``film`` (its header, pixels not needed) for ``pred``."""
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )

    film = reference(film)
    c = _codes()
    has = RelationshipTypeValues.CONTAINS

    def yes_no(value: bool):
        return c["yes"] if value else c["no"]

    items = [
        CodeContentItem(c["finding"], c["pneumonia"], has),
        CodeContentItem(c["presence"], c[finding(pred)], has),
        CodeContentItem(c["ood"], yes_no(pred.ood or pred.label is None), has),
    ]
    if pred.probability is not None:
        items.append(
            NumContentItem(c["probability"], pred.probability, c["unit"], relationship_type=has)
        )
    if pred.threshold is not None:
        items.append(
            NumContentItem(c["threshold"], pred.threshold, c["unit"], relationship_type=has)
        )
    items.append(CodeContentItem(c["uncertain"], yes_no(pred.uncertain), has))
    if pred.label is None:
        items.append(TextContentItem(c["reason"], _why_not(pred)[:1024], has))
    items += [
        TextContentItem(c["algorithm"], f"pneumo {meta.backbone}", has),
        TextContentItem(c["version"], model_version[:64], has),
        TextContentItem(c["comment"], RESEARCH_NOTE, has),
        ImageContentItem(
            c["source"], str(film.SOPClassUID), str(film.SOPInstanceUID), relationship_type=has
        ),
    ]
    root = ContainerContentItem(c["report"])
    root.ContentSequence = items
    return ComprehensiveSR(
        evidence=[film],
        content=root,
        series_instance_uid=_new_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="pneumo result (research use only)",
    )


def _why_not(pred: Prediction) -> str:
    return pred.ood_reason or (f"not assessed: {pred.error}" if pred.error else "not assessed")


def build_overlay(film: Dataset, picture: Image.Image):
    """A secondary capture in ``film``'s study holding ``picture`` (the RGB overlay)."""
    from highdicom.sc import SCImage

    film = reference(film)
    pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    sc = SCImage.from_ref_dataset(
        ref_dataset=film,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=_new_uid(),
        series_number=OVERLAY_SERIES_NUMBER,
        sop_instance_uid=_new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description="pneumo heatmap (research use only)",
    )
    sc.ImageComments = RESEARCH_NOTE
    sc.BurnedInAnnotation = "NO"
    sc.ConversionType = "WSD"  # made on a workstation: never taken for a film (dicom_scope)
    return sc
