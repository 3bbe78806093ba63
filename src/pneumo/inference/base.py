"""The Predictor interface every caller uses (CLI, API, app, evaluation), and its result type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from pneumo.models.checkpoint import ModelMetadata


@dataclass
class Prediction:
    """The answer for one image; ``error`` is set (and the rest None) when it could not be read."""

    source: str
    """File path, upload name or URL."""
    label: str | None = None
    """Predicted class name (NORMAL or PNEUMONIA)."""
    probability: float | None = None
    """Calibrated probability of PNEUMONIA."""
    confidence: float | None = None
    """Calibrated probability of the predicted class."""
    threshold: float | None = None
    """The operating threshold the label was decided at."""
    uncertain: bool = False
    """The probability lies in the model's uncertain band around the threshold."""
    ood: bool = False
    """The image does not look like a chest X-ray of the training distribution."""
    ood_score: float | None = None
    """Feature distance from the training data (the cut-off is in the model metadata)."""
    error: str | None = None
    """Why this image could not be classified."""

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor(ABC):
    """Classifies chest X-rays. Implementations are created once and are thread-safe."""

    metadata: ModelMetadata

    @abstractmethod
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed float32 batch (N, 3, H, W) -> (logits (N, C), pooled features (N, D))."""

    @abstractmethod
    def predict_images(self, images: list[Image.Image], names: list[str]) -> list[Prediction]:
        """Classify decoded images."""

    @abstractmethod
    def predict_sources(
        self, sources: list[str | Path | bytes], names: list[str] | None = None
    ) -> list[Prediction]:
        """Decode and classify files or bytes; a bad item gets ``error`` set, never an
        exception that loses the others."""
