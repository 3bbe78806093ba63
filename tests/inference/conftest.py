"""A tiny randomly initialised model with OOD statistics, exported once per test session; the
ONNX cache points into a temporary folder so tests never write to the home directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic import build_tiny_model, make_xray


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def onnx_predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model, backend="onnx")


@pytest.fixture(scope="session")
def torch_predictor(tiny_model):
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model, backend="torch")


@pytest.fixture
def xray_files(tmp_path) -> list[Path]:
    """Six generated grey X-rays in mixed formats and sizes (JPEG, PNG, one large JPEG)."""
    paths = []
    for i in range(6):
        img = make_xray(100 + i, i % 2, size=96 if i != 5 else 900)
        path = tmp_path / (f"x{i}.png" if i == 2 else f"x{i}.jpeg")
        img.save(path)
        paths.append(path)
    return paths
