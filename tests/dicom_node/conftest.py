"""Fixtures of the DICOM node tests: a real Orthanc, the bundled model (which draws the heatmaps too), and
the test objects made from the real originals."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from films import test_objects
from orthanc_server import find_orthanc


@pytest.fixture(scope="session")
def orthanc_binary() -> str:
    """Skipped only when Orthanc is missing and PNEUMO_REQUIRE_ORTHANC is unset (CI sets it)."""
    binary = find_orthanc()
    if binary is None:
        if os.environ.get("PNEUMO_REQUIRE_ORTHANC"):
            pytest.fail("Orthanc not found (apt-get install orthanc)")
        pytest.skip("Orthanc not installed: apt-get install orthanc")
    return binary


@pytest.fixture(scope="session")
def engine():
    """The bundled model on ONNX Runtime, as ``pneumo predict`` runs it; it draws the heatmaps
    too (its graph's class activation map output), as the node does."""
    from pneumo.inference.engine import load_predictor

    predictor = load_predictor(backend="onnx")
    return predictor, predictor


@pytest.fixture(scope="session")
def objects(originals_dir: Path) -> dict[str, bytes]:
    normal = sorted((originals_dir / "NORMAL").glob("*.jpeg"))[0]
    pneumonia = sorted((originals_dir / "PNEUMONIA").glob("*.jpeg"))[0]
    return test_objects(normal, pneumonia)


class Captured(logging.Handler):
    """Every log line, formatted, of everything the node and its libraries log at INFO."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def captured_logs():
    handler = Captured()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the tests' own polling of Orthanc
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)
