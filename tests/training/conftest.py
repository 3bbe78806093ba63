from __future__ import annotations

import pytest

from pneumo.training.config import TrainConfig


@pytest.fixture
def tiny_config():
    """Fast settings: a tiny random backbone, 64x64 images, fp32, no worker processes."""

    def make(data, output, **overrides) -> TrainConfig:
        base = dict(
            backbone="test_efficientnet",
            pretrained=False,
            data=data,
            output=output,
            epochs=2,
            batch_size=8,
            lr=0.002,
            precision="fp32",
            workers=0,
            val_fraction=0.25,
        )
        base.update(overrides)
        return TrainConfig(**base)

    return make
