"""Pure ASGI middleware that protects the server before the body is read: the API key is checked
from the headers alone, and a body is cut off when it is too large or arrives too slowly. A
caller without the key, or a stalled upload, never holds a connection or makes the server read
up to the upload cap."""

from __future__ import annotations

import hmac
import time

import anyio
from fastapi.responses import JSONResponse

from pneumo.api.settings import ApiSettings

OPEN_PATHS = frozenset({"/v1/health", "/v1/ready"})
"""Probes answered without the key: load balancers and orchestrators cannot send it."""
DOCS_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


def key_problem(values: list[bytes], key: str) -> tuple[int, str] | None:
    """(status, detail) when the X-API-Key header ``values`` do not open the API, else None. The
    header's bytes are compared with the key's UTF-8 bytes in constant time, exactly."""
    if len(values) > 1:
        # proxies and frameworks disagree on which of several counts
        return 400, "several X-API-Key headers: send exactly one"
    if not values or not hmac.compare_digest(values[0], key.encode()):
        return 401, "missing or invalid API key (header X-API-Key)"
    return None


async def refuse(send, status: int, detail: str, **headers: str) -> None:
    """Answer ``status`` with a JSON ``detail`` and close the connection: the request's body,
    if any, is left unread."""
    response = JSONResponse(
        {"detail": detail}, status_code=status, headers={"Connection": "close", **headers}
    )
    await response({"type": "http"}, None, send)


class ApiKeyGate:
    """Checks X-API-Key on the request's headers, before any byte of its body is received:
    401 (or 400 for several keys) and the connection closed. The probes stay open, and the
    docs too with ``public_docs``."""

    def __init__(self, app, settings: ApiSettings):
        self.app = app
        self.key = settings.api_key
        self.open_paths = OPEN_PATHS | (DOCS_PATHS if settings.public_docs else frozenset())
        if settings.public_metrics:
            self.open_paths |= {"/metrics"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.key is None or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        values = [value for name, value in scope["headers"] if name == b"x-api-key"]
        problem = key_problem(values, self.key)
        if problem is None:
            return await self.app(scope, receive, send)
        status, detail = problem
        extra = {"WWW-Authenticate": "APIKey"} if status == 401 else {}
        await refuse(send, status, detail, **extra)


class BodyRefused(Exception):
    """Raised into the app from ``receive`` when the body is cut off."""


class BodyGuard:
    """Cuts a request body off with 413 when Content-Length, or the bytes actually streamed,
    exceed ``max_bytes`` (before the multipart parser buffers anything big), and with 408 when
    it pauses longer than ``pause_s`` or, after the first ``pause_s``, averages under
    ``min_bytes_per_s``. The connection is closed either way."""

    def __init__(self, app, *, max_bytes: int, pause_s: float, min_bytes_per_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.pause_s = pause_s
        self.min_rate = min_bytes_per_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await refuse(send, 413, self._too_large())
        start = time.monotonic()
        seen = 0
        body_done = False
        refusal: tuple[int, str] | None = None
        answered = False

        async def guarded_receive():
            nonlocal seen, body_done, refusal
            if body_done:  # waiting for a disconnect, not for the body
                return await receive()
            # a pause ends at pause_s; a slow drip when `seen` falls below the minimum rate
            rate_wait = start + self.pause_s + seen / self.min_rate - time.monotonic()
            message = None
            if rate_wait > 0:
                with anyio.move_on_after(min(self.pause_s, rate_wait)):
                    message = await receive()
            if message is None:
                refusal = 408, self._too_slow(seen, paused=self.pause_s <= rate_wait)
                raise BodyRefused
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    refusal = 413, self._too_large()
                    raise BodyRefused
            return message

        async def guarded_send(message):
            # FastAPI turns any error while parsing a form into a 400: answer ours instead
            nonlocal answered
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start" and not answered:
                answered = True
                await refuse(send, *refusal)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BodyRefused:
            if not answered:
                answered = True
                await refuse(send, *refusal)

    def _too_large(self) -> str:
        mib = self.max_bytes / (1024 * 1024)
        return f"request body too large (limit {mib:g} MiB, PNEUMO_MAX_UPLOAD_MB)"

    def _too_slow(self, seen: int, *, paused: bool) -> str:
        why = (
            f"nothing arrived for {self.pause_s:g} s (PNEUMO_READ_TIMEOUT_S)"
            if paused
            else f"it came slower than {self.min_rate / 1024:g} KiB/s (PNEUMO_MIN_UPLOAD_KIB_S)"
        )
        return f"request body timed out after {seen} bytes: {why}"
