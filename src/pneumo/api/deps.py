"""Dependencies shared by the routers: the loaded predictor and the API-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from pneumo.api.guards import key_problem
from pneumo.api.loading import RETRY_AFTER_S
from pneumo.api.settings import ApiSettings
from pneumo.inference.predictor import Predictor

# documents the header in the OpenAPI schema; the check itself is ApiKeyGate's, repeated below
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    """The served predictor; 503 with Retry-After (and the reason) while it loads."""
    slot = request.app.state.model
    if slot.predictor is None:
        headers = {} if slot.failed else {"Retry-After": str(RETRY_AFTER_S)}
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, slot.reason, headers=headers)
    return slot.predictor


def require_api_key(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> None:
    """401 unless the X-API-Key header matches the configured key (constant-time); 400 when
    the header comes several times. ``ApiKeyGate`` already refused such requests before their
    body was read: this keeps each route safe on its own."""
    if settings.api_key is None:
        return
    values = [v.encode("latin-1") for v in request.headers.getlist("x-api-key")]
    problem = key_problem(values, settings.api_key)
    if problem is not None:
        code, detail = problem
        headers = {"WWW-Authenticate": "APIKey"} if code == 401 else None
        raise HTTPException(code, detail, headers=headers)


def require_docs_access(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> None:
    """The API key check for /docs, /redoc and /openapi.json unless they are public."""
    if not settings.public_docs:
        require_api_key(request, key, settings)


def require_metrics_access(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> None:
    """The API key check for /metrics unless it is public."""
    if not settings.public_metrics:
        require_api_key(request, key, settings)
