"""Heatmaps: which regions of the X-ray pushed the model towards a class, and the overlays
that show them. Serving takes them from the exported graph's class activation map
(``Predictor.heatmaps``, no torch); ``GradCam`` computes torch Grad-CAM from the last
convolutional feature map (timm's ``forward_features``) and the gradient of the class logit
through the head (``forward_head``), the reference the exported map is tested against."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.models.preprocess import preprocess

if TYPE_CHECKING:
    import torch

    from pneumo.models.checkpoint import ModelMetadata


class GradCam:
    """Grad-CAM over one loaded model; create once and share (calls are serialised)."""

    def __init__(self, model: torch.nn.Module, metadata: ModelMetadata):
        self.model = model.eval().requires_grad_(False)
        self.metadata = metadata
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: str | Path | None = None) -> GradCam:
        """Load the model directory (default: $PNEUMO_MODEL or the bundled model)."""
        from pneumo.models.checkpoint import load_model

        model, meta, _ = load_model(model_dir)
        return cls(model, meta)

    def warm_up(self) -> None:
        """One throw-away pass: the first backward pass is several times slower than the rest
        (kernel selection), and a server should pay that at start-up, not on the first click."""
        h, w = self.metadata.data_config.input_size
        self.heatmaps([Image.new("L", (w, h), 128)], [0])

    def heatmaps(self, images: list[Image.Image], targets: list[int]) -> list[np.ndarray]:
        """One map in [0, 1] per image (feature-map resolution) for class index ``targets[i]``.
        A map that is all zero means nothing in the image argued for that class."""
        import torch

        if len(images) != len(targets):
            raise ValueError("one target class per image")
        if not images:
            return []
        n_classes = len(self.metadata.class_names)
        for t in targets:
            if not 0 <= t < n_classes:
                raise ValueError(f"target class {t} out of range 0..{n_classes - 1}")
        cfg = self.metadata.data_config
        # One image per pass: kernels are chosen per input shape, so a fixed shape keeps every
        # call as fast as the warmed-up one (a new batch size costs seconds on a CPU).
        out = []
        for img, target in zip(images, targets, strict=True):
            x = torch.from_numpy(preprocess(img.convert("RGB"), cfg)[None])
            with self._lock, torch.enable_grad():
                x.requires_grad_(True)  # the weights are frozen; this builds the graph
                fmap = self.model.forward_features(x)
                score = self.model.forward_head(fmap)[0, target]
                (grads,) = torch.autograd.grad(score, fmap)
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * fmap.detach()).sum(dim=1))[0].numpy()
            peak = float(cam.max())
            out.append((cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam))
        return out


def class_map(cam: np.ndarray) -> np.ndarray:
    """One class's activation map (h, w) as Grad-CAM shows it: the cells that argued against
    the class set to 0, the strongest to 1 (all zero when no cell argued for it)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    peak = float(cam.max()) if cam.size else 0.0
    return cam / peak if peak > 0 else np.zeros_like(cam)


OVERLAY_SIDE = 1024
"""Longest side of an overlay PNG (written by `pneumo predict --heatmaps`, returned by the API):
enough to read the film, a few hundred KiB at most."""


def overlay_png(image: Image.Image, cam: np.ndarray, *, max_side: int = OVERLAY_SIDE) -> bytes:
    """The overlay of ``cam`` on ``image``, shrunk to ``max_side``, as PNG bytes."""
    import io

    small = image.copy()
    small.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    # zlib level 1: a fifth of the default level's time for files about 12% larger (an overlay
    # is mostly smooth colour); the encoder was most of a heatmap request's latency
    overlay(small, cam).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jet(values: np.ndarray) -> np.ndarray:
    """A jet-like colour map (blue - green - yellow - red) for values in [0, 1], as uint8 RGB;
    the ends are trimmed so that the hottest value is pure red, not jet's dark red."""
    v = 0.125 + 0.75 * values[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, *, alpha: float = 0.55) -> Image.Image:
    """Blend ``cam`` (any resolution, values in [0, 1]) over ``image``: the map is stretched to
    the image the same way the model squashed the image to its input size. Cool regions stay
    see-through, so the X-ray remains readable."""
    base = image.convert("RGB")
    w, h = base.size
    resized = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize(
        (w, h), Image.BILINEAR
    )
    heat = np.clip(np.asarray(resized), 0.0, 1.0)
    colour = _jet(heat).astype(np.float32)
    weight = (alpha * heat)[..., None]
    blended = np.asarray(base, dtype=np.float32) * (1.0 - weight) + colour * weight
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")
