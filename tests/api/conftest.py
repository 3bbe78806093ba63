"""An API app over a tiny generated model, with and without an API key."""

from __future__ import annotations

import io

import pytest

from synthetic import build_tiny_model, make_xray

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def api_predictor(tmp_path_factory, onnx_cache):
    from pneumo.inference.engine import load_predictor

    model = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    return load_predictor(model)


def _client(predictor, **settings):
    from fastapi.testclient import TestClient

    from pneumo.api.main import create_app
    from pneumo.api.settings import ApiSettings

    return TestClient(create_app(ApiSettings(**settings), predictor=predictor))


@pytest.fixture
def client(api_predictor):
    with _client(api_predictor) as c:
        yield c


@pytest.fixture
def keyed_client(api_predictor):
    with _client(api_predictor, api_key=API_KEY) as c:
        yield c


@pytest.fixture
def make_client(api_predictor):
    return lambda **settings: _client(api_predictor, **settings)


def jpeg_bytes(seed: int = 0, label: int = 0, size: int = 96) -> bytes:
    buf = io.BytesIO()
    make_xray(seed, label, size).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def xray_jpeg() -> bytes:
    return jpeg_bytes()


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def make_jpeg():
    return jpeg_bytes
