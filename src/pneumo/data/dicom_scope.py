"""What a DICOM header says the object is, read before anyone trusts its pixels: the model was
made for frontal chest radiographs, and a CT slice or a typed report kept as a secondary capture
can look enough like one to get a confident diagnosis (issue 18: p 0.976 and p 0.998).

The rule, in the order it is applied (the first objection is the reason given):

1. Modality: CR, DX, RG (film/screen) and DR (not a DICOM code, but written by some digital
   radiography systems) pass; OT ("other") says nothing; any other modality (CT, MR, US, RF
   fluoroscopy, MG mammography, DOC ...) is refused.
2. SOP class: computed radiography and digital X-ray (for presentation or processing) are
   radiographs; a secondary capture must show it is one (below); any other class pydicom knows
   (CT, MR, ultrasound, mammography, encapsulated PDF ...) is refused. A class pydicom does not
   know (private) leaves the decision to the other attributes.
3. Secondary capture passes only with a sign of being a radiograph: conversion type DF
   (digitized film) or DI (digital interface), a radiograph modality, or the chest as body part;
   a workstation capture, scanned document or drawing of anything else is refused.
4. Body part examined, when given, must name the chest (CHEST, THORAX, LUNG ...).
5. View position, when given, must be frontal: PA or AP; lateral, oblique and decubitus views
   are refused.

A header that says nothing (no modality, body part or view) is not refused: the pixel checks of
the out-of-distribution flag still apply to it.
"""

from __future__ import annotations

from pneumo.data.decode import printable

RADIOGRAPH_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
"""SOP classes of radiographs."""
SECONDARY_CAPTURE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
)
"""Secondary capture: anything turned into DICOM, from a digitized film to a typed report."""
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "DR")
"""Modalities of projection radiographs (DR is not a DICOM code but some systems write it)."""
NEUTRAL_MODALITIES = ("OT",)
"""Modalities that say nothing about what the image is."""
FILM_CONVERSIONS = {"DF": "digitized film", "DI": "digital interface"}
"""Secondary-capture conversion types that mean a radiograph was captured."""
CHEST_WORDS = ("CHEST", "THORAX", "THORAC", "TORAX", "LUNG")
"""Body part examined names the chest when it contains one of these."""
FRONTAL_VIEWS = ("PA", "AP")
"""View positions of the films the model was trained on."""

_MODALITY_NAMES = {
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "US": "ultrasound",
    "NM": "nuclear medicine",
    "PT": "PET",
    "MG": "mammography",
    "XA": "X-ray angiography",
    "RF": "fluoroscopy",
    "IO": "intra-oral radiography",
    "PX": "panoramic dental X-ray",
    "DOC": "document",
    "SR": "structured report",
    "ES": "endoscopy",
    "XC": "external camera photograph",
    "OP": "ophthalmic photograph",
}
_CONVERSION_NAMES = {
    "DV": "digitized video",
    "WSD": "made on a workstation",
    "SD": "scanned document",
    "SI": "scanned image",
    "DRW": "drawing",
    "SYN": "synthetic image",
}
_VIEW_NAMES = {
    "LL": "left lateral",
    "RL": "right lateral",
    "LLD": "left lateral decubitus",
    "RLD": "right lateral decubitus",
    "LLO": "left lateral oblique",
    "RLO": "right lateral oblique",
}


def _text(ds, keyword: str) -> str:
    """An attribute as one upper-case, printable line; '' when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)  # a multi-valued attribute
    return printable(" ".join(str(value).split())).upper()[:64]


def _named(code: str, names: dict[str, str]) -> str:
    return f"{code} ({names[code]})" if code in names else code


def _sop_class(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
    return str(uid or "").strip()


def _known_name(uid: str) -> str | None:
    """The name pydicom's dictionary gives a UID, or None for a private or unknown one."""
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(uid)
    return entry[0] if entry else None


def not_a_chest_radiograph(ds) -> str | None:
    """Why the header of ``ds`` (a pydicom data set) says it is not a frontal chest radiograph,
    in words for the user; None when nothing in it objects."""
    modality = _text(ds, "Modality")
    body_part = _text(ds, "BodyPartExamined")
    chest = any(word in body_part for word in CHEST_WORDS)
    if modality and modality not in RADIOGRAPH_MODALITIES + NEUTRAL_MODALITIES:
        return f"DICOM modality {_named(modality, _MODALITY_NAMES)} is not a chest radiograph"
    sop = _sop_class(ds)
    if sop in SECONDARY_CAPTURE_CLASSES:
        conversion = _text(ds, "ConversionType")
        film = conversion in FILM_CONVERSIONS or modality in RADIOGRAPH_MODALITIES or chest
        if not film:
            how = _named(conversion, _CONVERSION_NAMES) if conversion else "not given"
            return (
                f"DICOM secondary capture (conversion type {how}) that does not say it is "
                "a radiograph"
            )
    elif sop and sop not in RADIOGRAPH_CLASSES and (name := _known_name(sop)) is not None:
        return f"DICOM object of class {printable(name)} is not a chest radiograph"
    if body_part and not chest:
        return f"DICOM body part {body_part} is not the chest"
    view = _text(ds, "ViewPosition")
    if view and view not in FRONTAL_VIEWS:
        return f"DICOM view {_named(view, _VIEW_NAMES)} is not a frontal (PA or AP) chest film"
    return None


def dicom_scope_problem(data: bytes, label: str) -> str | None:
    """``not_a_chest_radiograph`` for the bytes of a DICOM file (header only); None for a
    header pydicom cannot read, which decoding reports."""
    from pneumo.data.dicom import read_header
    from pneumo.errors import ImageDecodeError

    try:
        ds = read_header(data, label)
    except ImageDecodeError:
        return None
    return not_a_chest_radiograph(ds)
