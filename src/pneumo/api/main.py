"""The FastAPI application: ``create_app(settings)`` loads the model once in the lifespan and
mounts one router per resource. Run it with ``pneumo serve``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response

from pneumo import __version__
from pneumo.api.deps import require_docs_access, require_metrics_access
from pneumo.api.guards import ApiKeyGate, BodyGuard
from pneumo.api.loading import ModelSlot
from pneumo.api.metrics import ApiMetrics, RequestMetrics
from pneumo.api.request_id import RequestId
from pneumo.api.routers import meta, predict
from pneumo.api.settings import ApiSettings
from pneumo.errors import PneumoError
from pneumo.inference.batching import Overloaded

log = logging.getLogger(__name__)


class NoQueryStrings(logging.Filter):
    """Drops query strings from uvicorn's access log lines: they can carry names or tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


class NoProbes(logging.Filter):
    """Keeps health probes and metric scrapes (every few seconds, from machines) out of the
    access log, where they would bury the requests people make; /metrics still counts them."""

    PATHS = frozenset({"/v1/health", "/v1/ready", "/metrics"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return args[2].split("?", 1)[0] not in self.PATHS
        return True


def _quiet_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    for kind in (NoQueryStrings, NoProbes):
        if not any(isinstance(f, kind) for f in access.filters):
            access.addFilter(kind())


def create_app(settings: ApiSettings | None = None, predictor=None) -> FastAPI:
    """The API app. ``predictor`` (already loaded) skips loading, for tests and embedding."""
    settings = settings or ApiSettings.from_env()
    from pneumo.data.decode import decode_budget

    decode_budget.limit = int(settings.decode_budget_mb * 1024 * 1024)
    _quiet_access_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the port is bound once this yields: load in the background, answer 503 meanwhile
        slot = app.state.model
        if predictor is not None:
            slot.fill(predictor, settings)
        else:
            slot.reason = "the model is loading"
            slot.load_in_background(settings)
        try:
            yield
        finally:
            slot.close()

    app = FastAPI(
        title="pneumo",
        version=__version__,
        summary="Pneumonia detection on pediatric chest X-rays (research use only).",
        lifespan=lifespan,
        # served below, behind the API key unless PNEUMO_PUBLIC_DOCS=1
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    docs_guard = [Depends(require_docs_access)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=docs_guard)
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=docs_guard)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pneumo API")

    @app.get("/redoc", include_in_schema=False, dependencies=docs_guard)
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="pneumo API")

    app.state.model = ModelSlot()
    app.state.metrics = ApiMetrics(app.state.model)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_access)])
    async def metrics() -> Response:
        """Prometheus text format, this process's counts."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(app.state.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(meta.router)
    app.include_router(predict.router)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded):
        return JSONResponse(
            {"detail": str(exc)},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(PneumoError)
    async def pneumo_error(_: Request, exc: PneumoError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    # the last added runs first: the key is checked before the body guard starts reading
    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_upload_bytes,
        pause_s=settings.read_timeout_s,
        min_bytes_per_s=settings.min_upload_kib_s * 1024,
    )
    app.add_middleware(ApiKeyGate, settings=settings)
    # outside the guards, so their refusals are counted and carry a request id too
    routers = (app.router, meta.router, predict.router)
    routes = frozenset(r.path for router in routers for r in router.routes if hasattr(r, "path"))
    app.add_middleware(RequestMetrics, metrics=app.state.metrics, routes=routes)
    app.add_middleware(RequestId)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): settings from the environment."""
    return create_app(ApiSettings.from_env())
