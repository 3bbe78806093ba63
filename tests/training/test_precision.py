"""``--precision auto``: bf16 autocast only where this CPU measured it faster for training,
without touching the weights it measured with; frozen features stay fp32, as serving runs."""

from __future__ import annotations

import json

import pytest
import torch

import pneumo.training.runtime as runtime
from pneumo.models.registry import create_model
from pneumo.training.train import train


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("test_efficientnet", pretrained=False)


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="this CPU has no native bf16")
def test_measuring_leaves_the_weights_as_they_were(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speedup = runtime.measure_bf16_speedup(model, (64, 64))
    assert speedup > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("speedup", "expected"), [(2.0, "bf16"), (1.05, "fp32"), (0.7, "fp32")])
def test_auto_takes_bf16_only_when_measured_clearly_faster(model, monkeypatch, speedup, expected):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(runtime, "measure_bf16_speedup", lambda *a, **k: speedup)
    assert runtime.choose_precision("auto", model, (64, 64), prefer_bf16=False) == expected


def test_auto_without_native_bf16_is_fp32_without_measuring(model, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)

    def forbidden(*args, **kwargs):
        raise AssertionError("measured on a CPU without bf16")

    monkeypatch.setattr(runtime, "measure_bf16_speedup", forbidden)
    assert runtime.choose_precision("auto", model, (64, 64), prefer_bf16=True) == "fp32"
    assert runtime.choose_precision("bf16", model, (64, 64), prefer_bf16=True) == "bf16"


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_auto_run_records_what_it_chose(tiny_data, tiny_config, tmp_path, monkeypatch, mode):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(runtime, "measure_bf16_speedup", lambda *a, **k: 3.0)
    cfg = tiny_config(tiny_data, tmp_path / "run", mode=mode, epochs=1, precision="auto")
    config = json.loads((train(cfg).run_dir / "config.json").read_text())
    assert config["precision"] == "auto"
    # Frozen heads must see the fp32 features serving computes, whatever bf16 would gain.
    assert config["resolved_precision"] == ("fp32" if mode == "frozen" else "bf16")
