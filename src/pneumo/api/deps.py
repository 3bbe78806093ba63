"""Dependencies shared by the routers: the loaded predictor and the API-key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from pneumo.api.settings import ApiSettings
from pneumo.inference.base import Predictor

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_predictor(request: Request) -> Predictor:
    predictor = getattr(request.app.state, "predictor", None)
    if predictor is None:  # pragma: no cover - the lifespan loads it before serving
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded")
    return predictor


def require_api_key(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> None:
    """401 unless the X-API-Key header matches the configured key (constant-time); 400 when
    the header comes several times (proxies and frameworks disagree on which one counts)."""
    if settings.api_key is None:
        return
    if len(request.headers.getlist("x-api-key")) > 1:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "several X-API-Key headers: send exactly one"
        )
    if key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key (header X-API-Key)",
            headers={"WWW-Authenticate": "APIKey"},
        )


def require_docs_access(
    request: Request,
    key: Annotated[str | None, Depends(api_key_header)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> None:
    """The API key check for /docs, /redoc and /openapi.json unless they are public."""
    if not settings.public_docs:
        require_api_key(request, key, settings)
