"""Clients that cannot or will not finish a request (issue 18): a real uvicorn server on a free
loopback port, spoken to over raw sockets. Without the key nothing is read past the headers;
stalled or dripping uploads and half-sent headers are answered 408 and disconnected."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

READ_TIMEOUT_S = 1.0


@pytest.fixture
def serve_live(api_predictor):
    """Starts uvicorn over the tiny model on a free port with ``settings``, a 1 s read timeout
    and at least 1 KiB/s for uploads; returns its (host, port)."""
    import uvicorn

    from pneumo.api.main import create_app
    from pneumo.api.protocol import HeadTimeoutProtocol
    from pneumo.api.settings import ApiSettings

    servers = []

    def start(**settings) -> tuple[str, int]:
        settings = ApiSettings(read_timeout_s=READ_TIMEOUT_S, min_upload_kib_s=1, **settings)
        protocol = type("Protocol", (HeadTimeoutProtocol,), {"read_timeout_s": READ_TIMEOUT_S})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings, predictor=api_predictor),
            host="127.0.0.1",
            port=port,
            http=protocol,
            log_level="warning",
            backlog=512,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return "127.0.0.1", port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_url(serve_live, api_key):
    return serve_live(api_key=api_key)


def _head(length: int, key: str | None = None) -> bytes:
    lines = [
        "POST /v1/predict HTTP/1.1",
        "Host: localhost",
        "Content-Type: multipart/form-data; boundary=xyz",
        f"Content-Length: {length}",
    ]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PART_HEAD = (
    b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jpeg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


def _connect(address, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer_and_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; socket.timeout if it keeps it open."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # a reset after the answer (unread bytes of ours) ends it too
        pass
    return data


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789"], ids=["no-key", "wrong-key"])
def test_a_request_without_the_key_is_refused_after_its_headers(live_url, key):
    """Was: the 15 MiB body had to arrive before the 401. Now the headers alone get it, and
    the connection is closed (the body is never read)."""
    with _connect(live_url, timeout=3) as sock:
        sock.sendall(_head(15 * 1024 * 1024, key))  # and not one byte of the body
        answer = _answer_and_close(sock)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"missing or invalid API key" in answer and b"connection: close" in answer.lower()


def test_a_client_that_expects_100_continue_reads_the_401_before_uploading(live_url):
    """What the README tells clients with large files: curl's `Expect: 100-continue` gets the
    401 instead of the go-ahead, so the upload is never sent."""
    with _connect(live_url, timeout=3) as sock:
        sock.sendall(_head(15 * 1024 * 1024)[:-2] + b"Expect: 100-continue\r\n\r\n")
        answer = _answer_and_close(sock)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_keyed_upload_that_stalls_mid_body_is_cut_off(live_url, api_key):
    with _connect(live_url) as sock:
        sock.sendall(_head(100_000, api_key) + PART_HEAD + b"x" * 1000)
        started = time.monotonic()
        answer = _answer_and_close(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"nothing arrived for 1 s (PNEUMO_READ_TIMEOUT_S)" in answer
    assert waited < READ_TIMEOUT_S + 1.5


def test_an_upload_dripping_under_the_minimum_rate_is_cut_off(live_url, api_key):
    """100 bytes every 0.3 s never pauses for the 1 s timeout, but averages 333 B/s, under
    the 1 KiB/s minimum: cut off about 1.5 s in, long before the 100 kB would arrive."""
    with _connect(live_url) as sock:
        sock.sendall(_head(100_000, api_key) + PART_HEAD)
        started = time.monotonic()
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < 6:
            with contextlib.suppress(OSError):  # closed by the server: read what it said
                sock.sendall(b"y" * 100)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:  # our drip after the server's close: it has answered
                break
            answer += chunk
            if not chunk:
                break
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"slower than 1 KiB/s (PNEUMO_MIN_UPLOAD_KIB_S)" in answer
    assert 1.0 < waited < 3.5


def test_headers_that_never_finish_are_cut_off(live_url):
    with _connect(live_url) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: loc")  # and nothing more
        started = time.monotonic()
        answer = _answer_and_close(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request headers not received within 1 s" in answer
    assert waited < READ_TIMEOUT_S + 1.5


def test_many_stalled_clients_without_the_key_hold_nothing(live_url, api_key, make_jpeg):
    """Was: 200 keyless uploads stalled after a few bytes were all still open after 65 s. Now
    those with complete headers get 401 at once, those with half headers 408 within the read
    timeout, and a keyed client is served meanwhile."""
    import httpx

    started = time.monotonic()
    stalled_bodies = [_connect(live_url) for _ in range(100)]
    stalled_heads = [_connect(live_url) for _ in range(100)]
    try:
        for sock in stalled_bodies:
            sock.sendall(_head(10 * 1024 * 1024) + PART_HEAD)
        for sock in stalled_heads:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\n")
        host, port = live_url
        r = httpx.post(
            f"http://{host}:{port}/v1/predict",
            files=[("files", ("a.jpeg", make_jpeg(), "image/jpeg"))],
            headers={"X-API-Key": api_key},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        for sock in stalled_bodies:
            assert _answer_and_close(sock).startswith(b"HTTP/1.1 401")
        for sock in stalled_heads:
            assert _answer_and_close(sock).startswith(b"HTTP/1.1 408")
    finally:
        for sock in stalled_bodies + stalled_heads:
            sock.close()
    assert time.monotonic() - started < READ_TIMEOUT_S + 4


def test_the_key_is_compared_as_utf8_bytes(serve_live):
    """A non-ASCII key sent as its UTF-8 bytes opens the API (it was compared after a
    latin-1 round trip, so it never matched); the same text in latin-1 does not."""
    key = "clé-secrète-2024"
    address = serve_live(api_key=key)
    for sent, status in [(key.encode(), b"200"), (key.encode("latin-1"), b"401")]:
        with _connect(address) as sock:
            sock.sendall(b"GET /v1/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
            sock.sendall(b"X-API-Key: " + sent + b"\r\n\r\n")
            answer = _answer_and_close(sock)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:300]
