"""A request id in every answer (``X-Request-ID``) and every log line written while the request
is served, so an operator can match a client's complaint to the server's log. A client's own id
is kept when it is sane (a proxy's or a tracing system's), else one is made."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("pneumo_request_id", default="-")
"""The id of the request being served in this context; "-" outside any request."""

SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""What a client's id may be: short, and nothing that could forge a log line or a header."""


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is exactly one sane value, else a new random one."""
    given = [value for name, value in headers if name == b"x-request-id"]
    if len(given) == 1 and SANE_ID.fullmatch(given[0]):
        return given[0].decode("ascii")
    return uuid.uuid4().hex


class RequestId:
    """Pure ASGI middleware: sets ``current_request_id`` for the request and adds it to the
    answer's headers (refusals by the guards inside it included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_from(scope["headers"])
        token = current_request_id.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute for the log format ("-" outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


LOG_FORMATS = ("text", "json")
"""``PNEUMO_LOG_FORMAT``: text lines (default) or one JSON object per line for a log shipper."""


def log_config(log_format: str | None = None) -> dict:
    """uvicorn's logging configuration with the request id in every line, pneumo's own loggers
    included (``uvicorn.run(log_config=...)``, applied in each worker); ``json`` (or
    ``PNEUMO_LOG_FORMAT=json``) writes each record as one JSON object with its fields."""
    import copy
    import os

    from uvicorn.config import LOGGING_CONFIG

    from pneumo.errors import PneumoError

    log_format = log_format or os.environ.get("PNEUMO_LOG_FORMAT", "").strip() or "text"
    if log_format not in LOG_FORMATS:
        raise PneumoError(f"PNEUMO_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "pneumo.api.request_id.RequestIdFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "request_id"]
    config["formatters"]["default"]["fmt"] = "%(levelprefix)s [%(request_id)s] %(message)s"
    config["formatters"]["access"]["fmt"] = (
        '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    config["loggers"]["pneumo"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if log_format == "json":
        fields = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"
        config["formatters"] = {
            "default": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": fields},
            "access": {"()": "pneumo.api.json_logs.AccessJsonFormatter", "fmt": fields},
        }
    return config
