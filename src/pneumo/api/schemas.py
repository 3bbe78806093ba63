"""Response bodies of the REST API: the prediction result is a view of the engine's record
(``Prediction``), the rest kept apart from the engine's own types."""

from __future__ import annotations

import dataclasses
import typing

from pydantic import BaseModel, Field, create_model

from pneumo.inference.predictor import Prediction, shown_fields


class _PredictionView(BaseModel):
    @classmethod
    def of(cls, prediction: Prediction) -> PredictionOut:
        """The public view of one Prediction (the fields it shows, nothing else)."""
        return cls(
            **{f.metadata["api"] or f.name: getattr(prediction, f.name) for f in shown_fields()}
        )


def _result_model() -> type[_PredictionView]:
    """``PredictionOut`` from ``Prediction``'s shown fields: their types, defaults and
    descriptions, under their API names (``source`` is ``filename``)."""
    hints = typing.get_type_hints(Prediction)
    spec = {
        f.metadata["api"] or f.name: (
            hints[f.name],
            Field(
                ... if f.default is dataclasses.MISSING else f.default,
                description=f.metadata["doc"],
            ),
        )
        for f in shown_fields()
    }
    return create_model(
        "PredictionOut",
        __base__=_PredictionView,
        __doc__="The result for one uploaded file; ``error`` set means it could not be "
        "classified, ``ood`` that it was not assessed (no label, no probability: "
        "``ood_reason`` says why).",
        __module__=__name__,
        **spec,
    )


PredictionOut = _result_model()


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
