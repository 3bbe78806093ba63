"""Fixtures for the app tests: a tiny model on disk and a temp database (inputs: app_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised test backbone saved in the real model format."""
    import torch

    from pneumo.models.checkpoint import ModelMetadata, save_model
    from pneumo.models.preprocess import DataConfig
    from pneumo.models.registry import create_model

    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)  # the same weights in every run: heatmaps and answers are repeatable
    model = create_model("test_efficientnet", pretrained=False)
    meta = ModelMetadata(
        backbone="test_efficientnet",
        data_config=DataConfig((64, 64), (0.5,) * 3, (0.5,) * 3),
        # A wide band so the tests see the "uncertain" note on a random model.
        uncertain_band=(0.01, 0.99),
    )
    return save_model(path, model, meta)


@pytest.fixture
def app_env(monkeypatch, tmp_path, tiny_model) -> Path:
    """Point the page at the tiny model, a fresh SQLite file and outbox; returns the database path."""
    db = tmp_path / "app.db"
    monkeypatch.setenv("PNEUMO_MODEL", str(tiny_model))
    monkeypatch.setenv("PNEUMO_DB", str(db))
    monkeypatch.setenv("PNEUMO_OUTBOX", str(tmp_path / "outbox"))  # never the home folder's
    monkeypatch.delenv("PNEUMO_APP_PASSWORD_HASH", raising=False)
    monkeypatch.delenv("PNEUMO_MAX_UPLOAD_MB", raising=False)
    return db


@pytest.fixture(scope="module")
def predictor(tiny_model):
    """The tiny model on the default engine, shared by a test module."""
    from pneumo.inference.engine import load_predictor

    return load_predictor(tiny_model)


@pytest.fixture(scope="module")
def cam(tiny_model):
    from pneumo.inference.cam import GradCam

    return GradCam.from_dir(tiny_model)
