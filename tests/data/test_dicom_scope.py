"""A DICOM object the model was not made for gets "not assessed" with what its header says
(issue 18, item 4: a CT slice got PNEUMONIA p 0.976, a typed report kept as a secondary capture
p 0.998), on every face; a frontal chest radiograph is still diagnosed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pydicom.uid as uid
import pytest
from PIL import Image, ImageDraw, ImageOps
from pydicom.data import get_testdata_file

from corpus import cr_dataset
from pneumo.data.dicom_scope import dicom_scope_problem
from pneumo.inference.predictor import NOT_ASSESSED

CR = uid.ComputedRadiographyImageStorage
DX = uid.DigitalXRayImageStorageForPresentation
SC = uid.SecondaryCaptureImageStorage
CT = uid.CTImageStorage
PRIVATE = "1.3.6.1.4.1.99999.1.1"  # a vendor's own class: pydicom does not know it


def film_dicom(grey: np.ndarray, sop: str = CR, modality: str | None = "CR", **tags) -> bytes:
    """8-bit grey pixels as a DICOM Part 10 file of SOP class ``sop`` with these attributes."""
    ds = cr_dataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
    del ds.Modality
    if modality is not None:
        ds.Modality = modality
    ds.Rows, ds.Columns = grey.shape
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(grey, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


SMALL = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))

REFUSED = [
    ("ct-slice", dict(sop=CT, modality="CT"), "DICOM modality CT (computed tomography) is not"),
    ("mr", dict(sop=uid.MRImageStorage, modality="MR"), "DICOM modality MR (magnetic resonance)"),
    ("fluoroscopy", dict(sop=DX, modality="RF"), "DICOM modality RF (fluoroscopy)"),
    (
        "sc-report",
        dict(sop=SC, modality="OT", ConversionType="WSD"),
        "DICOM secondary capture (conversion type WSD (made on a workstation)) that does not say",
    ),
    (
        "sc-scan",
        dict(sop=SC, modality=None, ConversionType="SD"),
        "secondary capture (conversion type SD (scanned document))",
    ),
    ("sc-bare", dict(sop=SC, modality=None), "secondary capture (conversion type not given)"),
    ("sc-document", dict(sop=SC, modality="DOC"), "DICOM modality DOC (document) is not"),
    (
        "ultrasound-class",
        dict(sop=uid.UltrasoundImageStorage, modality=None),
        "DICOM object of class Ultrasound Image Storage is not a chest radiograph",
    ),
    ("hand", dict(BodyPartExamined="HAND"), "DICOM body part HAND is not the chest"),
    (
        "lateral",
        dict(sop=DX, modality="DX", BodyPartExamined="CHEST", ViewPosition="LL"),
        "DICOM view LL (left lateral) is not a frontal (PA or AP) chest film",
    ),
    ("lateral-free-text", dict(ViewPosition="LATERAL"), "DICOM view LATERAL is not a frontal"),
    ("decubitus", dict(ViewPosition="RLD"), "view RLD (right lateral decubitus)"),
]

ACCEPTED = [
    ("cr-plain", dict()),
    ("dx-pa-chest", dict(sop=DX, modality="DX", BodyPartExamined="CHEST", ViewPosition="PA")),
    ("dx-ap-thorax", dict(sop=DX, modality="DX", BodyPartExamined="THORAX", ViewPosition="AP")),
    ("dx-processing", dict(sop=uid.DigitalXRayImageStorageForProcessing, modality="DX")),
    ("film-screen", dict(modality="RG", BodyPartExamined="CHEST")),
    ("digitized-film", dict(sop=SC, modality="OT", ConversionType="DF")),
    ("sc-of-a-cr", dict(sop=SC, modality="CR", ConversionType="WSD")),
    ("sc-of-a-chest", dict(sop=SC, modality="OT", ConversionType="WSD", BodyPartExamined="CHEST")),
    ("private-class-cr", dict(sop=PRIVATE, modality="CR")),
    ("nothing-said", dict(modality=None)),
    ("lower-case-values", dict(modality="dx", BodyPartExamined="chest", ViewPosition="pa")),
]


@pytest.mark.parametrize(("kind", "header", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_the_header_says_is_not_a_chest_radiograph_is_named(kind, header, reason):
    assert reason in (dicom_scope_problem(film_dicom(SMALL, **header), kind) or "")


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case, written on purpose
@pytest.mark.parametrize(("kind", "header"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_chest_radiograph_headers_raise_no_objection(kind, header):
    assert dicom_scope_problem(film_dicom(SMALL, **header), kind) is None


def test_pydicoms_own_ct_and_mr_slices_are_refused():
    """Real scanner files shipped with pydicom (an axial CT slice, an MR slice)."""
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        with open(get_testdata_file(name), "rb") as f:
            data = f.read()
        assert dicom_scope_problem(data, name).startswith(f"DICOM modality {modality} (")


# --- the bundled model, on every face ---------------------------------------------------------


def _typed_report() -> np.ndarray:
    """A grey page of typed text, as a report scanned or captured on a workstation."""
    page = Image.new("L", (420, 540), 235)
    draw = ImageDraw.Draw(page)
    for line in range(30):
        draw.text((30, 20 + 17 * line), f"Finding {line}: no focal consolidation seen. " * 2, 30)
    return np.asarray(page)


@pytest.fixture(scope="module")
def chest(originals_dir) -> np.ndarray:
    """A real pediatric chest film (a Kermany original), 8-bit, at most 512 pixels."""
    film = sorted((originals_dir / "PNEUMONIA").glob("*.jpeg"))[0]
    grey = ImageOps.autocontrast(Image.open(film).convert("L"))
    grey.thumbnail((512, 512))
    return np.asarray(grey)


@pytest.fixture(scope="module")
def films(chest, tmp_path_factory) -> dict[str, bytes]:
    """The chest film as a frontal DX, and the same pixels with a header that says CT or a
    lateral view; a typed report as a secondary capture; pydicom's real CT slice."""
    return {
        "chest-pa.dcm": film_dicom(
            chest, DX, "DX", BodyPartExamined="CHEST", ViewPosition="PA", PatientName="Doe^Jane"
        ),
        "chest-as-ct.dcm": film_dicom(chest, CT, "CT"),
        "chest-lateral.dcm": film_dicom(chest, DX, "DX", ViewPosition="LL"),
        "report.dcm": film_dicom(_typed_report(), SC, "OT", ConversionType="WSD"),
        "ct-slice.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
    }


WHY = {
    "chest-as-ct.dcm": "DICOM modality CT (computed tomography) is not a chest radiograph",
    "chest-lateral.dcm": "DICOM view LL (left lateral) is not a frontal (PA or AP) chest film",
    "report.dcm": "DICOM secondary capture (conversion type WSD (made on a workstation))",
    "ct-slice.dcm": "DICOM modality CT (computed tomography) is not a chest radiograph",
}


@pytest.fixture(scope="module")
def bundled():
    """The bundled model on the torch backend (no export to wait for)."""
    from pneumo.inference.engine import load_predictor

    return load_predictor(backend="torch")


def _check(rows: dict[str, dict], empty) -> None:
    """The frontal chest film is diagnosed; every other object has no diagnosis, and its
    header's words lead the reason."""
    assert rows["chest-pa.dcm"]["label"] in ("NORMAL", "PNEUMONIA")
    assert rows["chest-pa.dcm"]["ood_reason"] in ("", None)
    for name, why in WHY.items():
        row = rows[name]
        assert row["label"] == empty and row["probability"] == empty, name
        assert row["confidence"] == empty and row["error"] in ("", None), name
        assert row["ood_reason"].startswith(f"{NOT_ASSESSED}: {why}"), row["ood_reason"]


@pytest.mark.realdata
def test_predictor_gives_no_diagnosis_for_what_the_header_refuses(bundled, films):
    """The path of `pneumo predict` and the API: the chest film is diagnosed from its pixels,
    the very same pixels labelled CT or lateral are not."""
    preds = bundled.predict_sources(list(films.values()), list(films))
    rows = {p.source: p.to_dict() for p in preds}
    _check(rows, None)
    assert all(p.ood for p in preds if p.source in WHY)


@pytest.mark.realdata
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predict_files_say_not_assessed_with_the_header_reason(films, tmp_path, suffix, cli):
    folder = tmp_path / "films"
    folder.mkdir()
    for name, data in films.items():
        (folder / name).write_bytes(data)
    out = tmp_path / f"rows{suffix}"
    code, _, err = cli("predict", folder, "--backend", "torch", "-o", out, "--no-progress")
    assert code == 0, err
    if suffix == ".csv":
        with open(out, newline="") as f:
            rows = {
                r["path"].rsplit("/", 1)[-1]: dict(r, label=r["class"]) for r in csv.DictReader(f)
            }
        _check(rows, "")
    else:
        records = json.loads(out.read_text())
        _check({r["path"].rsplit("/", 1)[-1]: dict(r, label=r["class"]) for r in records}, None)


@pytest.mark.realdata
def test_api_answers_not_assessed_with_the_header_reason(bundled, films):
    from fastapi.testclient import TestClient

    from pneumo.api.main import create_app
    from pneumo.api.settings import ApiSettings

    uploads = [("files", (name, data, "application/dicom")) for name, data in films.items()]
    with TestClient(create_app(ApiSettings(), predictor=bundled)) as client:
        answer = client.post("/v1/predict", files=uploads)
    assert answer.status_code == 200, answer.text
    rows = {r["filename"]: r for r in answer.json()["results"]}
    _check(rows, None)
    assert all(rows[name]["ood"] for name in WHY)


def test_ray_stages_carry_the_header_reason_from_decoding_to_the_row():
    """`pneumo predict --ray` decodes in tasks and classifies in actors: the reason must travel
    between them (the two stages called as Ray calls them, without a cluster)."""
    pytest.importorskip("pyarrow")
    from pneumo.inference.pipeline import FilmPipeline
    from pneumo.inference.ray_predict import _decode_batch, _PredictActor
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    ct = get_testdata_file("CT_small.dcm")
    batch = {
        "index": np.array([0]),
        "path": np.array([ct], dtype=object),
        "file": np.array([ct], dtype=object),
        "error": np.array([""], dtype=object),
    }
    decoded = _decode_batch(batch, FilmPipeline.load(BUNDLED_MODEL_DIR))
    (row,) = _PredictActor(str(BUNDLED_MODEL_DIR), "torch", "fp32", 1, 8)(decoded).to_pylist()
    assert row["class"] is None and row["probability"] is None and row["ood"]
    # The header's words come first; the pixel checks may add theirs after them.
    assert row["ood_reason"].startswith(f"{NOT_ASSESSED}: {WHY['ct-slice.dcm']}")
