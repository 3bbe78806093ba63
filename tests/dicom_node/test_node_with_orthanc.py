"""The node in the hospital's flow, against a real Orthanc PACS: films go from Orthanc to the
node (REST "send to modality", C-STORE), results come back into the film's study in Orthanc,
and what they say is what ``pneumo predict`` says about the same pixels."""

from __future__ import annotations

import io
import time

import pydicom
import pytest
from films import PATIENT_NAME
from orthanc_server import free_port, running_orthanc

pytest.importorskip("pynetdicom", reason="pip install 'pneumo[dicom-node]'")
pytest.importorskip("highdicom", reason="pip install 'pneumo[dicom-node]'")

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture


def sr_content(ds: pydicom.Dataset) -> dict[str, object]:
    """The SR's items by concept name: codes as their meaning, numbers as floats."""
    out: dict[str, object] = {}
    for item in ds.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        kind = item.ValueType
        if kind == "CODE":
            out[name] = item.ConceptCodeSequence[0].CodeMeaning
        elif kind == "NUM":
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif kind == "TEXT":
            out[name] = item.TextValue
        elif kind == "IMAGE":
            out[name] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return out


def study_objects(rest, study_uid: str) -> list[pydicom.Dataset]:
    """Every instance Orthanc holds in the study, read back as DICOM."""
    found = rest.post("/tools/lookup", content=study_uid).json()
    if not found:
        return []
    out = []
    for instance in rest.get(f"/studies/{found[0]['ID']}/instances").json():
        data = rest.get(f"/instances/{instance['ID']}/file").content
        out.append(pydicom.dcmread(io.BytesIO(data)))
    return out


def wait_for(predicate, timeout: float = 90.0, what: str = "the results"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what} did not arrive within {timeout:.0f} s")


@pytest.fixture(scope="module")
def site(orthanc_binary, engine, objects, tmp_path_factory, captured_logs):
    """Orthanc holding the test objects, a node knowing Orthanc as its destination; all sent."""
    from pneumo.dicom_node.config import Destination, NodeConfig
    from pneumo.dicom_node.node import DicomNode
    from pneumo.storage.db import open_database

    predictor, cam = engine
    root = tmp_path_factory.mktemp("node")
    node_port = free_port()
    modalities = {"pneumo": ["PNEUMO", "127.0.0.1", node_port]}
    with running_orthanc(orthanc_binary, modalities) as pacs, pacs.rest() as rest:
        config = NodeConfig(
            port=node_port,
            allowed_callers=("ORTHANC",),
            destination=Destination("ORTHANC", "127.0.0.1", pacs.dicom_port),
            spool_dir=root / "spool",
            db=str(root / "records.db"),
            retry_first_s=0.5,
            retry_max_s=2.0,
        )
        sessions = open_database(config.db)
        with DicomNode(config, predictor=predictor, cam=cam, session_factory=sessions) as node:
            ids = {}
            for name, data in objects.items():
                answer = rest.post("/instances", content=data)
                answer.raise_for_status()
                ids[name] = answer.json()["ID"]
            sent = rest.post(
                "/modalities/pneumo/store",
                json={"Resources": list(ids.values()), "Synchronous": True},
            )
            assert sent.status_code == 200, sent.text
            yield {"rest": rest, "node": node, "ids": ids, "sessions": sessions, "pacs": pacs}


def _study(objects: dict[str, bytes], name: str) -> str:
    return str(pydicom.dcmread(io.BytesIO(objects[name]), stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def predicted(objects, tmp_path_factory) -> dict[str, dict]:
    """What ``pneumo predict`` (its library function) writes for the same files."""
    import json

    from pneumo.inference.predict import predict_files

    folder = tmp_path_factory.mktemp("as-files")
    for name, data in objects.items():
        (folder / f"{name}.dcm").write_bytes(data)
    out = folder / "rows.json"
    predict_files([folder], backend="onnx", output=out, progress=False)
    return {
        row["path"].rsplit("/", 1)[-1][: -len(".dcm")]: row for row in json.loads(out.read_text())
    }


def held_in_study(site, objects, name: str, count: int) -> dict[str, pydicom.Dataset]:
    """Orthanc's objects in the study of test object ``name`` once it holds ``count``, by class."""
    film = pydicom.dcmread(io.BytesIO(objects[name]), stop_before_pixels=True)

    def ready():
        held = study_objects(site["rest"], str(film.StudyInstanceUID))
        return held if len(held) >= count else None

    held = wait_for(ready, what=f"the results for {name}")
    assert len(held) == count, [str(ds.SOPClassUID) for ds in held]
    return {str(ds.SOPClassUID): ds for ds in held}


@pytest.mark.parametrize("name", ["mono1", "jpegls"])
def test_a_chest_film_gets_an_sr_and_an_overlay_in_its_study_matching_pneumo_predict(
    site, objects, engine, predicted, name
):
    film = pydicom.dcmread(io.BytesIO(objects[name]), stop_before_pixels=True)
    by_class = held_in_study(site, objects, name, 3)  # the film, the SR, the overlay
    sr, overlay = by_class[SR_CLASS], by_class[SC_CLASS]
    for result in (sr, overlay):
        assert result.StudyInstanceUID == film.StudyInstanceUID
        assert result.SOPInstanceUID != film.SOPInstanceUID
        assert result.SeriesInstanceUID != film.SeriesInstanceUID
        assert result.PatientID == film.PatientID
        assert result.AccessionNumber == film.AccessionNumber
    assert overlay.PhotometricInterpretation == "RGB"
    assert overlay.pixel_array.std(axis=-1).mean() > 1  # a colour heatmap over the grey film

    content = sr_content(sr)
    row = predicted[name]
    assert row["class"] in ("NORMAL", "PNEUMONIA")
    assert content["Presence of finding"] == (
        "Present" if row["class"] == "PNEUMONIA" else "Absent"
    )
    assert abs(content["Calibrated probability of pneumonia"] - row["probability"]) < 2e-6
    assert abs(content["Decision threshold"] - engine[0].metadata.threshold) < 1e-9
    assert content["Probability in the uncertain band"] == ("Yes" if row["uncertain"] else "No")
    assert content["Out of distribution for the model"] == "No"
    assert content["Source image"] == film.SOPInstanceUID
    assert content["Algorithm Version"] == engine[0].metadata.version
    assert "Research use only" in content["Comment"]


@pytest.mark.parametrize(("name", "why"), [("ct", "modality CT"), ("colour", "a colour image")])
def test_a_ct_slice_or_a_colour_picture_gets_not_assessed_and_no_overlay(
    site, objects, predicted, name, why
):
    by_class = held_in_study(site, objects, name, 2)  # the object and the SR only
    content = sr_content(by_class[SR_CLASS])
    assert content["Presence of finding"] == "Not assessed"
    assert content["Out of distribution for the model"] == "Yes"
    assert "Calibrated probability of pneumonia" not in content
    assert why in content["Reason not assessed"]
    assert predicted[name]["class"] is None and predicted[name]["ood"] is True


def test_each_film_is_one_record_of_the_patient_in_its_header_even_when_sent_twice(site, objects):
    from pneumo.storage import repository as repo

    for name in objects:  # all results in before the second send
        held_in_study(site, objects, name, 3 if name in ("mono1", "jpegls") else 2)
    again = site["rest"].post(
        "/modalities/pneumo/store", json={"Resources": [site["ids"]["mono1"]], "Synchronous": True}
    )
    assert again.status_code == 200, again.text
    time.sleep(3)  # a second result would be back by now
    held_in_study(site, objects, "mono1", 3)
    with site["sessions"]() as s:
        (patient,) = repo.find_patients(s, query="PID-4711")
        assert patient.name == PATIENT_NAME.replace("^", " ")
        records = repo.patient_records(s, patient_id=patient.id)
        assert len(records) == len(objects)
        assert sorted(r.prediction is None for r in records) == [False, False, True, True]
        details = [e.detail for e in repo.audit_events(s, patient_id=patient.id)]
    studies = {_study(objects, name) for name in objects}
    assert {d.split()[2] for d in details} == studies


def test_no_log_line_names_the_patient(site, objects, captured_logs):
    for name in objects:
        held_in_study(site, objects, name, 3 if name in ("mono1", "jpegls") else 2)
    text = "\n".join(captured_logs.lines)
    assert "received instance" in text  # the node did log its work
    for part in PATIENT_NAME.split("^"):
        assert part not in text
