"""uvicorn's HTTP/1.1 protocol with a deadline on the request head. uvicorn times out idle
keep-alive connections only after an answer: a client that connects and sends nothing, or half a
header line, holds the connection forever. Here it gets 408 and is disconnected after
PNEUMO_READ_TIMEOUT_S; the body's own deadlines are in ``pneumo.api.guards``."""

from __future__ import annotations

import asyncio
import functools
import json

from uvicorn.protocols.http.h11_impl import H11Protocol


@functools.cache
def _read_timeout_from_env() -> float:
    from pneumo.api.settings import ApiSettings

    return ApiSettings.from_env().read_timeout_s


class HeadTimeoutProtocol(H11Protocol):
    """``H11Protocol`` that closes a connection whose next request head is not complete within
    ``read_timeout_s`` of opening or of the previous answer."""

    read_timeout_s: float | None = None
    """None: PNEUMO_READ_TIMEOUT_S (each worker reads it once)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._wait_for_head()

    def on_response_complete(self) -> None:
        # armed first: the parent may start a pipelined request at once, which disarms it
        self._wait_for_head()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        self._disarm()
        timeout = self.read_timeout_s or _read_timeout_from_env()
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out, self.cycle, timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self, cycle_then, timeout: float) -> None:
        self._head_timer = None
        if self.cycle is not cycle_then or self.transport.is_closing():
            return  # a request head arrived meanwhile, or the connection is going anyway
        if self.cycle is not None and not self.cycle.response_complete:
            return  # still answering the previous request
        detail = f"request headers not received within {timeout:g} s (PNEUMO_READ_TIMEOUT_S)"
        body = json.dumps({"detail": detail}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        # written raw: h11 cannot answer a request it has not parsed yet
        self.transport.write(head.encode() + body)
        self.transport.close()
