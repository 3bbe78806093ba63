"""model.json: typed provenance, the band and k the metadata owns, and old files still read
and written back unchanged."""

from __future__ import annotations

import json

import pytest

from pneumo.evaluation.metrics import Metrics, compute_metrics
from pneumo.models.checkpoint import (
    BUNDLED_MODEL_DIR,
    DEFAULT_K,
    METADATA_FILE,
    ModelMetadata,
    OodConfig,
    RunDir,
    read_metadata,
    uncertain_band,
)
from pneumo.models.provenance import Adaptation, TrainingRecord, Variant


def _bundled() -> dict:
    return json.loads((BUNDLED_MODEL_DIR / METADATA_FILE).read_text())


def test_the_bundled_model_json_reads_typed_and_writes_back_unchanged():
    raw = _bundled()
    meta = ModelMetadata.from_dict(raw)
    assert isinstance(meta.training, TrainingRecord)
    assert meta.training.variant == Variant.from_dict(raw["training"]["variant"])
    assert meta.training.variant.name == raw["training"]["variant"]["name"]
    assert meta.training["backbone"] == meta.backbone  # still reads as the JSON it was
    assert meta.adaptation is None
    assert json.loads(json.dumps(meta.to_dict())) == raw


def test_an_adapted_model_keeps_its_record_and_the_keys_it_was_written_with():
    raw = _bundled()
    raw["adaptation"] = {
        "base_model": "models/default",
        "base_fingerprint": "sha256:00",
        "mode": "labeled",
        "n_films": 80,
        "refit": ["batchnorm", "ood", "temperature", "threshold"],
        "figures": {"roc_auc_base": 0.9},
        "source": "reviewed records",
        "records": {"NORMAL": [1, 2], "PNEUMONIA": [3]},
    }
    meta = ModelMetadata.from_dict(raw)
    assert isinstance(meta.adaptation, Adaptation)
    assert (meta.adaptation.mode, meta.adaptation.n_films) == ("labeled", 80)
    assert meta.adaptation.source["records"]["PNEUMONIA"] == [3]
    assert meta.adaptation["base_model"] == "models/default"
    assert json.loads(json.dumps(meta.to_dict())) == raw


def test_a_model_json_without_a_band_gets_the_band_training_places():
    raw = _bundled()
    del raw["uncertain_band"]
    raw["threshold"] = 0.5
    meta = ModelMetadata.from_dict(raw)
    assert meta.uncertain_band == pytest.approx((0.2, 0.8))
    assert meta.uncertain_band == uncertain_band(0.5)


def test_k_has_one_default():
    assert OodConfig(cutoff=0.3).k == DEFAULT_K
    raw = _bundled()
    assert read_metadata(BUNDLED_MODEL_DIR).ood.k == raw["ood"]["k"]


def test_the_metrics_in_model_json_read_as_metrics():
    metrics = Metrics.from_dict(_bundled()["metrics"])
    assert 0.5 < metrics.roc_auc <= 1 and metrics.n == metrics.n_normal + metrics.n_pneumonia
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5)
    assert Metrics.from_dict(m.to_dict()) == m
    assert list(m.to_dict()) == [
        "n", "n_normal", "n_pneumonia", "accuracy", "balanced_accuracy", "sensitivity",
        "specificity", "precision", "f1", "roc_auc", "confusion_matrix",
    ]  # fmt: skip


def test_a_run_folder_is_named_once(tmp_path):
    run = RunDir(tmp_path / "runs" / "lite0")
    assert RunDir.holding(run.model) == run
    assert RunDir.holding(BUNDLED_MODEL_DIR) is None
    assert run.history.name == "history.json" and run.config.name == "config.json"
