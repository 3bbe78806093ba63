"""The transforms a training run builds from the model's input contract: augmentation for
the training films, the plain ``preprocess`` for everything else."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pneumo.data.augment import AugmentConfig
from pneumo.data.dataset import XrayDataset
from pneumo.data.discover import ImageRecord
from pneumo.models.preprocess import DataConfig, preprocessor, to_array


def image_dataset(
    records: list[ImageRecord], config: DataConfig, augment: AugmentConfig | None = None
) -> XrayDataset:
    """Films as the model with ``config`` takes them, augmented when ``augment`` is given."""
    transform = TrainTransform(augment, config) if augment is not None else preprocessor(config)
    return XrayDataset(records, transform, draft_size=config.input_size[::-1])


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

        img = self._acquisition(self.pipeline(img))
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

    def _acquisition(self, img: Image.Image) -> Image.Image:
        """What scanners and exports do to a film: lost resolution, equalised histograms, JPEG
        recompression (the shifts of ``pneumo evaluate --stress``)."""
        import io

        import torch
        from PIL import ImageOps

        def chance(p: float) -> bool:
            return p > 0 and float(torch.rand(())) < p

        if chance(self.augment.downscale):
            factor = 0.4 + 0.5 * float(torch.rand(()))
            w, h = img.size
            small = img.resize(
                (max(8, round(w * factor)), max(8, round(h * factor))), Image.BILINEAR
            )
            img = small.resize((w, h), Image.BILINEAR)
        if chance(self.augment.equalize):
            img = ImageOps.equalize(img)
        if chance(self.augment.jpeg):
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=int(15 + 75 * float(torch.rand(()))))
            img = Image.open(io.BytesIO(buffer.getvalue()))
            img.load()
        return img
