"""Response bodies of the REST API (kept apart from the engine's own types)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from pneumo.inference.base import Prediction


class PredictionOut(BaseModel):
    """The result for one uploaded file; ``error`` set means it could not be classified, ``ood``
    that it was not assessed (no label, no probability: ``ood_reason`` says why)."""

    filename: str = Field(description="Name of the uploaded file.")
    label: str | None = Field(
        None, description="NORMAL or PNEUMONIA; null when not assessed (ood) or unreadable."
    )
    probability: float | None = Field(
        None, description="Calibrated probability of PNEUMONIA; null when not assessed."
    )
    confidence: float | None = Field(None, description="Probability of the predicted class.")
    threshold: float | None = Field(None, description="Decision threshold used.")
    uncertain: bool = Field(False, description="Probability in the model's uncertain band.")
    ood: bool = Field(
        False, description="Does not look like a chest X-ray of the training data: no diagnosis."
    )
    ood_score: float | None = Field(None, description="Feature distance from the training data.")
    ood_reason: str | None = Field(None, description="Why the film was not assessed.")
    error: str | None = Field(None, description="Why this file could not be classified.")

    @classmethod
    def of(cls, prediction: Prediction) -> PredictionOut:
        """The public view of one Prediction (the fields it shows, nothing else)."""
        shown = prediction.to_dict()
        return cls(filename=shown.pop("source"), **shown)


class PredictResponse(BaseModel):
    """Results in upload order; one bad file never fails the others."""

    model: str = Field(description="Backbone of the model that answered.")
    results: list[PredictionOut]


class ErrorResponse(BaseModel):
    """Every 4xx answer: a plain-words ``detail``."""

    detail: str


class HealthResponse(BaseModel):
    status: str = Field(
        description="'ok' when the model is loaded, 'loading' before, 'failed' if it cannot be."
    )
    model_loaded: bool
    version: str = Field(description="pneumo version.")


class ModelInfo(BaseModel):
    """What the served model is and how it decides."""

    backbone: str
    class_names: list[str]
    input_size: list[int]
    threshold: float
    temperature: float
    uncertain_band: list[float]
    ood_cutoff: float | None
    data_fingerprint: str
    metrics: dict
    created: str
    model_version: str = Field(description="pneumo version that trained the model.")
    server_version: str = Field(description="pneumo version serving it.")
    backend: str = Field(description="Inference engine: openvino, onnx or torch.")
    precision: str = Field(description="Precision the network runs at: fp32, bf16 or int8.")
    precision_guard: dict | None = Field(
        None,
        description="The accuracy guard's figures for reduced precision on this machine "
        "(validation ROC-AUC change, decision flips, flips outside the uncertain band, speed), "
        "None when it has not run for this model.",
    )


class ReadyResponse(BaseModel):
    """Whether this process takes predictions now."""

    ready: bool = Field(description="Model loaded and room in the queue.")
    model_loaded: bool
    images_in_flight: int = Field(description="Images admitted and not yet answered.")
    queue_limit: int = Field(description="Images admitted at most (PNEUMO_QUEUE_IMAGES).")
    reason: str | None = Field(
        None, description="Why not ready: loading (and which step), failed, or a full queue."
    )
