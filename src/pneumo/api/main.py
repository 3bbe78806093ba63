"""The FastAPI application: ``create_app(settings)`` loads the model once in the lifespan and
mounts one router per resource. Run it with ``pneumo serve``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse

from pneumo import __version__
from pneumo.api.deps import require_docs_access
from pneumo.api.routers import meta, predict
from pneumo.api.settings import ApiSettings
from pneumo.errors import PneumoError
from pneumo.inference.batching import Overloaded

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class NoQueryStrings(logging.Filter):
    """Drops query strings from uvicorn's access log lines: they can carry names or tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def _quiet_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, NoQueryStrings) for f in access.filters):
        access.addFilter(NoQueryStrings())


class BodySizeLimit:
    """Pure ASGI middleware: 413 when Content-Length, or the bytes actually streamed, exceed the
    cap, before the multipart parser buffers anything big."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        too_large = False
        replaced = False

        async def limited_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            # FastAPI turns any error while parsing a form into a 400: answer 413 instead
            nonlocal replaced
            if too_large:
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not replaced:
                replaced = True
                await self._reject(send)

    async def _reject(self, send):
        mib = self.max_bytes / (1024 * 1024)
        response = JSONResponse(
            {"detail": f"request body too large (limit {mib:g} MiB, PNEUMO_MAX_UPLOAD_MB)"},
            status_code=413,
        )
        await response({"type": "http"}, None, send)


def create_app(settings: ApiSettings | None = None, predictor=None) -> FastAPI:
    """The API app. ``predictor`` (already loaded) skips loading, for tests and embedding."""
    settings = settings or ApiSettings.from_env()
    from pneumo.data.decode import decode_budget

    decode_budget.limit = int(settings.decode_budget_mb * 1024 * 1024)
    _quiet_access_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from fastapi.concurrency import run_in_threadpool

        from pneumo.inference.batching import BatchingPredictor
        from pneumo.inference.engine import load_predictor

        inner = predictor
        if inner is None:
            inner = await run_in_threadpool(
                load_predictor,
                settings.model_dir,
                backend=settings.backend,
                precision=settings.precision,
                threads=settings.threads,
            )
        batcher = BatchingPredictor(
            inner, max_wait_ms=settings.batch_wait_ms, max_images=settings.queue_images
        )
        app.state.predictor = batcher
        log.info("serving %s on %s %s", inner.metadata.backbone, inner.backend, inner.precision)
        try:
            yield
        finally:
            batcher.close()
            if app.state.predictor is batcher:
                app.state.predictor = None

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

    app.state.predictor = None
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

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): settings from the environment."""
    return create_app(ApiSettings.from_env())
