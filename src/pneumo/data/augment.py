"""Training augmentation settings (applied by ``pneumo.training.transforms``). The official test split is shifted from train (its NORMAL films are
harder), and strong photometric and geometric augmentation is what helped there, not a better
validation score. Evaluation never augments."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes applied to each training image (all off with ``AugmentConfig.none()``)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    """Area range of the random resized crop (1, 1 disables it)."""
    rotation: float = 15.0
    """Maximum rotation in degrees."""
    hflip: float = 0.5
    """Probability of a horizontal flip."""
    gamma: tuple[float, float] = (0.6, 1.7)
    """Range of the random gamma correction (covers the battery's exposures, 0.6 and 1.6)."""
    brightness: float = 0.3
    """Brightness jitter factor."""
    contrast: float = 0.4
    """Contrast jitter factor (covers the battery's x0.6 and x1.4)."""
    blur: float = 0.2
    """Probability of a Gaussian blur (sigma 0.1 to 1.5 pixels)."""
    noise: float = 0.2
    """Probability of additive Gaussian noise (sigma up to 0.04 of the range)."""
    jpeg: float = 0.25
    """Probability of a JPEG recompression at quality 15 to 90 (PACS exports, web uploads)."""
    downscale: float = 0.2
    """Probability of losing resolution: down to 40-90% of the size and back up."""
    equalize: float = 0.1
    """Probability of histogram equalisation (some consoles post-process films this way)."""

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ValueError(f"gamma range must be positive and ordered, got {self.gamma}")
        for name in ("hflip", "blur", "noise", "jpeg", "downscale", "equalize"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1]")

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls((1.0, 1.0), 0.0, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)
