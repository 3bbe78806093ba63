"""The weights a fine-tune ships are the EMA of its last checkpoint: not the raw weights of the
last epoch, not an earlier epoch's average (the best epoch's, say), not the start. Only two
things may differ, both deliberate: the logit shift folded into the head's bias, and
re-estimated batch-norm statistics (buffers, not weights)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pneumo.models.checkpoint import load_model
from pneumo.training.finalize import fold_logit_shift
from pneumo.training.train import train
from synthetic import write_dataset

pytestmark = pytest.mark.slow


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_a_fine_tune_ships_the_ema_of_its_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "chest_xray", {"train": (8, 8)})
    settings = dict(mode="finetune", batch_size=4, lr=0.01, ema_decay=0.5)
    ckpt = tmp_path / "run" / "checkpoints"
    # Epoch 1, its checkpoint kept aside, then --resume to epoch 2: the run has an earlier
    # checkpoint whose average must not be what ships.
    train(tiny_config(data, tmp_path / "run", epochs=1, **settings))
    shutil.copy(ckpt / "last.safetensors", tmp_path / "epoch1.safetensors")
    run_dir = train(tiny_config(data, tmp_path / "run", epochs=2, resume=True, **settings)).run_dir
    assert json.loads((ckpt / "last.json").read_text())["epoch"] == 2
    shipped, meta, _ = load_model(run_dir / "model")

    def as_shipped(path, prefix: str) -> dict[str, torch.Tensor]:
        """The parameters saved under ``prefix``, with the run's logit shift folded in."""
        saved = {k.removeprefix(prefix): v for k, v in load_file(str(path)).items()}
        model = copy.deepcopy(shipped)
        model.load_state_dict({k: v for k, v in saved.items() if k in model.state_dict()})
        fold_logit_shift(model, float(meta.metrics.get("logit_shift", 0.0)))
        return _weights(model)

    ships = _weights(shipped)
    last_ema = as_shipped(ckpt / "last.safetensors", "ema.module.")
    for name, value in ships.items():
        torch.testing.assert_close(value, last_ema[name], rtol=0, atol=1e-6, msg=name)

    def differs(other: dict[str, torch.Tensor]) -> bool:
        return max(float((ships[k] - other[k]).abs().max()) for k in ships) > 1e-4

    raw = as_shipped(ckpt / "last.safetensors", "model.")
    assert differs(raw), "shipped the raw weights of the last epoch, not their EMA"
    earlier = as_shipped(tmp_path / "epoch1.safetensors", "ema.module.")
    assert differs(earlier), "shipped epoch 1's average, not the last one"
    assert differs(as_shipped(ckpt / "start.safetensors", "")), "shipped the starting weights"
