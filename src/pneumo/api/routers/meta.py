"""Health and model metadata."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pneumo import __version__
from pneumo.api.deps import get_predictor, require_api_key
from pneumo.api.loading import RETRY_AFTER_S
from pneumo.api.schemas import ErrorResponse, HealthResponse, ModelInfo, ReadyResponse
from pneumo.inference.predictor import Predictor

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "The model failed to load."}},
)
def health(request: Request):
    """Liveness: 200 once the port is bound, while the model loads ("loading") and after
    ("ok"); 503 ("failed") when it failed to load, so an orchestrator restarts the process.
    Open without an API key, reveals nothing about the model."""
    slot = request.app.state.model
    loaded = slot.predictor is not None
    body = HealthResponse(
        status="ok" if loaded else "failed" if slot.failed else "loading",
        model_loaded=loaded,
        version=__version__,
    )
    return JSONResponse(body.model_dump(), status_code=503 if slot.failed else 200)


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={
        503: {"model": ReadyResponse, "description": "Loading, failed, or the queue is full."}
    },
)
def ready(request: Request):
    """Readiness, for load balancers: 200 when the model is loaded and warmed and the queue
    has room, else 503 with the reason (and Retry-After unless loading failed). Open without
    an API key."""
    slot = request.app.state.model
    predictor = slot.predictor
    limit = request.app.state.settings.queue_images
    if predictor is None:
        reason = slot.reason
    elif not predictor.ready:
        reason = f"the queue is full ({predictor.images_in_flight} of {limit} images in flight)"
    else:
        reason = None
    body = ReadyResponse(
        ready=reason is None,
        model_loaded=predictor is not None,
        images_in_flight=0 if predictor is None else predictor.images_in_flight,
        queue_limit=limit,
        reason=reason,
    )
    if body.ready:
        return body
    retry = {} if slot.failed else {"Retry-After": str(1 if predictor else RETRY_AFTER_S)}
    return JSONResponse(body.model_dump(), status_code=503, headers=retry)


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
