"""The REST API through FastAPI's TestClient: auth, uploads (JPEG, PNG, DICOM), errors, caps."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def _files(*items):
    return [("files", item) for item in items]


def test_health_is_open_and_reports_the_model(keyed_client):
    r = keyed_client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["model_loaded"] is True


def test_model_metadata_needs_the_key(keyed_client, api_key, api_predictor):
    r = keyed_client.get("/v1/model")
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    r = keyed_client.get("/v1/model", headers={"X-API-Key": "wrong-key-xxxxxxxxxx"})
    assert r.status_code == 401
    r = keyed_client.get("/v1/model", headers={"X-API-Key": api_key})
    assert r.status_code == 200
    body = r.json()
    assert body["backbone"] == "test_efficientnet" and body["input_size"] == [64, 64]
    assert body["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert body["backend"] == api_predictor.backend and body["precision"] == "fp32"
    assert body["ood_cutoff"] > 0 and body["server_version"]


def test_predict_without_key_is_401_json(keyed_client, xray_jpeg):
    r = keyed_client.post("/v1/predict", files=_files(("a.jpeg", xray_jpeg, "image/jpeg")))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")


def test_open_api_without_key(client, xray_jpeg):
    r = client.post("/v1/predict", files=_files(("a.jpeg", xray_jpeg, "image/jpeg")))
    assert r.status_code == 200
    (res,) = r.json()["results"]
    assert res["filename"] == "a.jpeg" and res["label"] in ("NORMAL", "PNEUMONIA")
    assert 0.0 <= res["probability"] <= 1.0 and res["error"] is None


def test_several_files_with_one_bad(keyed_client, api_key, make_jpeg, api_predictor):
    png = io.BytesIO()
    Image.open(io.BytesIO(make_jpeg(5, 1))).save(png, format="PNG")
    files = _files(
        ("one.jpeg", make_jpeg(1, 0), "image/jpeg"),
        ("broken.jpeg", b"\xff\xd8\xff\xe0 not really", "image/jpeg"),
        ("three.png", png.getvalue(), "image/png"),
    )
    r = keyed_client.post("/v1/predict", files=files, headers={"X-API-Key": api_key})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["one.jpeg", "broken.jpeg", "three.png"]
    assert results[1]["error"] and "broken.jpeg" in results[1]["error"]
    assert results[1]["label"] is None
    assert results[0]["error"] is None and results[2]["error"] is None
    # the API answers what the engine answers for the same bytes
    direct = api_predictor.predict_sources([make_jpeg(1, 0)])[0]
    assert results[0]["probability"] == pytest.approx(direct.probability, abs=1e-5)


def test_all_bad_is_422_with_reasons(client):
    r = client.post("/v1/predict", files=_files(("x.txt", b"hello", "text/plain")))
    assert r.status_code == 422
    assert "not an image" in r.json()["results"][0]["error"]


def test_no_files_is_a_clear_422(client):
    r = client.post("/v1/predict", data={"other": "1"})
    assert r.status_code == 422 and "files" in r.json()["detail"]


def test_too_many_files(make_client, xray_jpeg):
    with make_client(max_files=2) as c:
        r = c.post(
            "/v1/predict", files=_files(*[(f"{i}.jpeg", xray_jpeg, "image/jpeg") for i in range(3)])
        )
    assert r.status_code == 422 and "too many files" in r.json()["detail"]


def test_body_size_cap_is_413(make_client, make_jpeg):
    big = make_jpeg(2, 1, size=600)
    assert len(big) > 20 * 1024
    with make_client(max_upload_mb=0.01) as c:
        r = c.post("/v1/predict", files=_files(("big.jpeg", big, "image/jpeg")))
        assert r.status_code == 413 and "too large" in r.json()["detail"]
        small = c.post("/v1/predict", files=_files(("s.jpeg", make_jpeg(3, 0, 64), "image/jpeg")))
        assert small.status_code == 200


def test_body_size_cap_without_content_length(make_client):
    """Chunked uploads carry no Content-Length: the streamed bytes are counted instead."""
    with make_client(max_upload_mb=0.01) as c:

        def chunks():
            yield (
                b'--zzz\r\nContent-Disposition: form-data; name="files"; filename="a.jpeg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n"
            )
            for _ in range(20):
                yield b"x" * 4096

        r = c.post(
            "/v1/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
    assert r.status_code == 413


def test_dicom_upload(client):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 128, 96
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(0).integers(0, 4096, (128, 96), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = client.post("/v1/predict", files=_files(("scan.dcm", buf.getvalue(), "application/dicom")))
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert res["error"] is None and res["label"] in ("NORMAL", "PNEUMONIA")


def test_colour_photo_is_flagged_ood(client):
    photo = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(photo, "JPEG")
    r = client.post("/v1/predict", files=_files(("cat.jpeg", photo.getvalue(), "image/jpeg")))
    assert r.status_code == 200 and r.json()["results"][0]["ood"] is True


def test_openapi_and_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/health", "/v1/model"} <= set(schema["paths"])
    assert "X-API-Key" in str(schema["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_settings_from_env_validate():
    from pneumo.api.settings import ApiSettings
    from pneumo.errors import PneumoError

    s = ApiSettings.from_env({"PNEUMO_API_KEY": "k" * 12, "PNEUMO_MAX_UPLOAD_MB": "5"})
    assert s.api_key == "k" * 12 and s.max_upload_bytes == 5 * 1024 * 1024
    with pytest.raises(PneumoError, match="PNEUMO_MAX_UPLOAD_MB must be a number"):
        ApiSettings.from_env({"PNEUMO_MAX_UPLOAD_MB": "lots"})
    with pytest.raises(PneumoError, match="at least 8"):
        ApiSettings.from_env({"PNEUMO_API_KEY": "short"})
