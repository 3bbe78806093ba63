"""Training augmentation. The official test split is shifted from train (its NORMAL films are
harder), and strong photometric and geometric augmentation is what helped there, not a better
validation score. Evaluation never augments."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from pneumo.data.transforms import DataConfig, to_array


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes applied to each training image (all off with ``AugmentConfig.none()``)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    """Area range of the random resized crop (1, 1 disables it)."""
    rotation: float = 15.0
    """Maximum rotation in degrees."""
    hflip: float = 0.5
    """Probability of a horizontal flip."""
    gamma: tuple[float, float] = (0.7, 1.4)
    """Range of the random gamma correction."""
    brightness: float = 0.3
    """Brightness jitter factor."""
    contrast: float = 0.3
    """Contrast jitter factor."""
    blur: float = 0.2
    """Probability of a Gaussian blur (sigma 0.1 to 1.5 pixels)."""
    noise: float = 0.2
    """Probability of additive Gaussian noise (sigma up to 0.04 of the range)."""

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ValueError(f"gamma range must be positive and ordered, got {self.gamma}")
        for name in ("hflip", "blur", "noise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1]")

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls((1.0, 1.0), 0.0, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


class TrainTransform:
    """Grey PIL image -> augmented, normalised float32 array (3, H, W).

    Uses torch's random generator, which DataLoader seeds differently in every worker.
    """

    def __init__(self, augment: AugmentConfig, config: DataConfig):
        from torchvision import transforms as T

        self.augment, self.config = augment, config
        h, w = config.input_size
        geometric = [
            T.RandomResizedCrop(
                (h, w), scale=augment.crop_scale, ratio=(0.85, 1.15), antialias=True
            )
        ]
        if augment.rotation:
            geometric.append(T.RandomRotation(augment.rotation, fill=0))
        if augment.hflip:
            geometric.append(T.RandomHorizontalFlip(augment.hflip))
        if augment.brightness or augment.contrast:
            geometric.append(T.ColorJitter(augment.brightness, augment.contrast))
        if augment.blur:
            geometric.append(T.RandomApply([T.GaussianBlur(5, (0.1, 1.5))], p=augment.blur))
        self.pipeline = T.Compose(geometric)

    def __call__(self, img: Image.Image) -> np.ndarray:
        import torch

        img = self.pipeline(img)
        lo, hi = self.augment.gamma
        if hi > lo:
            gamma = lo + (hi - lo) * float(torch.rand(()))
            table = [round(255 * (i / 255) ** gamma) for i in range(256)]
            img = img.point(table * (len(img.getbands())))
        arr = to_array(img, self.config)
        if self.augment.noise and float(torch.rand(())) < self.augment.noise:
            sigma = 0.04 * float(torch.rand(())) / float(np.mean(self.config.std))
            noise = torch.randn(arr.shape[1:]).numpy() * sigma
            arr = arr + noise[None]  # the same noise on R, G, B: X-rays are grey
        return np.ascontiguousarray(arr, dtype=np.float32)
