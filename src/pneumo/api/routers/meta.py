"""Health and model metadata."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pneumo import __version__
from pneumo.api.deps import get_predictor, require_api_key
from pneumo.api.schemas import ErrorResponse, HealthResponse, ModelInfo, ReadyResponse
from pneumo.inference.base import Predictor

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get("/health", response_model=HealthResponse)
def health(request: Request) -> HealthResponse:
    """Liveness: open without an API key, reveals nothing about the model."""
    loaded = getattr(request.app.state, "predictor", None) is not None
    return HealthResponse(
        status="ok" if loaded else "loading", model_loaded=loaded, version=__version__
    )


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not loaded, or the queue is full."}},
)
def ready(request: Request):
    """Readiness, for load balancers: 200 when the model is loaded and the queue has room,
    else 503 with Retry-After. Open without an API key."""
    predictor = getattr(request.app.state, "predictor", None)
    body = ReadyResponse(
        ready=bool(predictor is not None and predictor.ready),
        model_loaded=predictor is not None,
        images_in_flight=0 if predictor is None else predictor.images_in_flight,
        queue_limit=request.app.state.settings.queue_images,
    )
    if body.ready:
        return body
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})


@router.get(
    "/model",
    response_model=ModelInfo,
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorResponse}},
)
def model_info(predictor: Annotated[Predictor, Depends(get_predictor)]) -> ModelInfo:
    """The served model: backbone, classes, input size, threshold, calibration, metrics."""
    meta = predictor.metadata
    cutoff = meta.ood.cutoff if meta.ood else None
    guard = predictor.precision_guard
    return ModelInfo(
        backbone=meta.backbone,
        class_names=list(meta.class_names),
        input_size=list(meta.data_config.input_size),
        threshold=meta.threshold,
        temperature=meta.temperature,
        uncertain_band=list(meta.uncertain_band),
        ood_cutoff=cutoff,
        data_fingerprint=meta.data_fingerprint,
        metrics=meta.metrics,
        created=meta.created,
        model_version=meta.pneumo_version,
        server_version=__version__,
        backend=predictor.backend,
        precision=predictor.precision,
        precision_guard=None if guard is None else guard.to_dict(),
    )
