"""A model's input contract and the one function that honours it. ``DataConfig`` (input size,
mean, std; like timm's pretrained data config) is stored in every model's metadata, and
``preprocess`` (squash-resize, grey to three channels, scale, normalise) is what training,
evaluation, serving and ``pneumo adapt`` all feed the network with, so they cannot drift apart.
The model owns it: the data layer only decodes films and applies a transform it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class DataConfig:
    """What a model needs of its input; saved in every model's metadata."""

    input_size: tuple[int, int] = (224, 224)
    """Height and width the image is resized to (squashed, as the data set was made)."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """Per-channel mean subtracted after scaling to [0, 1]."""
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per-channel standard deviation divided by after the mean."""

    def __post_init__(self):
        if len(self.input_size) != 2 or min(self.input_size) < 16:
            raise ValueError(f"input_size must be (height, width) >= 16, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std > 0")

    @classmethod
    def from_timm(cls, cfg: dict) -> DataConfig:
        """From timm's ``resolve_data_config`` output (input_size is (C, H, W))."""
        _, h, w = cfg["input_size"]
        return cls((int(h), int(w)), tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"])))

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return cls(tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"]))


def resize(img: Image.Image, config: DataConfig) -> Image.Image:
    """Squash to the model's input size (the data set's images were squashed the same way)."""
    h, w = config.input_size
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR, reducing_gap=3.0)


def to_array(img: Image.Image, config: DataConfig) -> np.ndarray:
    """Normalised float32 array (3, H, W) from an already resized grey or RGB image."""
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr[None], (3, *arr.shape))
    else:
        arr = arr[..., :3].transpose(2, 0, 1)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((arr - mean) / std, dtype=np.float32)


def preprocess(img: Image.Image, config: DataConfig) -> np.ndarray:
    """Decoded image -> model input (3, H, W) float32: resize, scale to [0, 1], normalise."""
    return to_array(resize(img, config), config)


def preprocessor(config: DataConfig) -> Callable[[Image.Image], np.ndarray]:
    """``preprocess`` bound to ``config``: a picklable transform for data-loader workers."""
    return partial(preprocess, config=config)
