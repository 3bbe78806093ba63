"""The URL guard checks every address a host resolves to, and the connection goes to an address
it checked, never to a second DNS answer (issue 18: DNS rebinding, time of check to time of use).

The resolver is replaced for one made-up host name, ``films.example``; two local servers listen
on the same port, at 127.0.0.1 (the public host, let through by the test-only loopback switch)
and 127.0.0.2 (standing for the internal host a rebinding answer points to). No traffic leaves
loopback."""

from __future__ import annotations

import io
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pneumo.app.fetch import FetchError, FetchPolicy, fetch_image

HOST = "films.example"
LOCAL = FetchPolicy(allow_loopback=True, timeout_s=5)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (32, 32), 128).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Recording(ThreadingHTTPServer):
    """An HTTP server that notes every connection and the Host header of every request."""

    daemon_threads = True

    def __init__(self, address, body: bytes):
        self.body, self.connections, self.hosts = body, 0, []
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hosts.append(self.headers.get("Host"))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


@pytest.fixture
def servers():
    """(checked, internal): the same port at 127.0.0.1 and at 127.0.0.2."""
    checked = _Recording(("127.0.0.1", 0), PNG)
    port = checked.server_address[1]
    try:
        internal = _Recording(("127.0.0.2", port), b"internal secrets")
    except OSError:
        checked.server_close()
        pytest.skip("cannot listen on 127.0.0.2 here")
    for server in (checked, internal):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield checked, internal
    for server in (checked, internal):
        server.shutdown()
        server.server_close()


@pytest.fixture
def dns(monkeypatch):
    """``dns(answers, ...)``: successive lookups of HOST get these address lists (the last one
    repeats); every other name resolves as usual. Returns the list of lookups made."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def install(*answers: list[str]):
        def fake(host, port, *args, **kwargs):
            if host != HOST:
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            ips = answers[min(len(lookups), len(answers)) - 1]
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (ip, port or 0, 0, 0) if ":" in ip else (ip, port or 0),
                )
                for ip in ips
            ]

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return lookups

    return install


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["127.0.0.1", "10.0.0.7"], "10.0.0.7 is a private address"),
        (["127.0.0.1", "169.254.169.254"], "169.254.169.254 is a link-local address"),
        (["127.0.0.1", "fd00::7"], "fd00::7 is a private address"),
        (["10.0.0.7", "127.0.0.1"], "10.0.0.7 is a private address"),
    ],
    ids=["public-then-private", "public-then-metadata", "public-then-ula", "private-first"],
)
def test_a_host_with_any_private_address_is_refused_unconnected(servers, dns, addresses, refused):
    """A guard that checked only the first answer would fetch from the public one, and the
    next connection (another library, a retry) may go to the private one."""
    checked, internal = servers
    dns(addresses)
    with pytest.raises(FetchError, match=refused):
        fetch_image(f"http://{HOST}:{checked.server_address[1]}/x.png", LOCAL)
    assert checked.connections == internal.connections == 0


def test_a_public_and_a_private_address_are_refused_by_the_default_policy(dns, monkeypatch):
    """The production policy, a routable public address first: refused before any connection."""
    dns(["93.184.216.34", "192.168.1.20"])
    attempts = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a))
    with pytest.raises(FetchError, match="192.168.1.20 is a private address"):
        fetch_image(f"http://{HOST}/x.png")
    assert attempts == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_connection_goes_to_the_address_that_was_checked(servers, dns, scheme):
    """The first lookup says 127.0.0.1, every later one 127.0.0.2 (DNS rebinding): a fetcher
    that lets its HTTP library resolve the name again connects to the second."""
    checked, internal = servers
    port = checked.server_address[1]
    lookups = dns(["127.0.0.1"], ["127.0.0.2"])
    url = f"{scheme}://{HOST}:{port}/xray.png"
    if scheme == "http":
        got = fetch_image(url, LOCAL)
        assert got.data == PNG
        assert checked.hosts == [f"{HOST}:{port}"]  # the URL's name, at the checked address
    else:  # TLS to a plain HTTP server fails, but only after connecting: to which one?
        with pytest.raises(FetchError, match="TLS error|cannot connect"):
            fetch_image(url, LOCAL)
        assert checked.connections == 1
    assert internal.connections == 0
    assert len(lookups) == 1


def test_the_certificate_is_checked_against_the_url_host_not_the_address(dns, monkeypatch):
    """Pinning the address must not weaken TLS: the handshake names the URL's host (SNI and
    certificate check), not the IP it connects to."""
    dns(["127.0.0.1"])
    names = []

    def wrap(self, sock, *args, server_hostname=None, **kwargs):
        names.append(server_hostname)
        sock.close()
        stop = ssl.SSLError(1, "stop here")
        stop.reason = "STOPPED_BY_TEST"
        raise stop

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", wrap)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(FetchError, match="TLS error"):
            fetch_image(f"https://{HOST}:{listener.getsockname()[1]}/x.png", LOCAL)
    finally:
        listener.close()
    assert names == [HOST]


def test_every_checked_address_is_tried_in_turn(servers, dns):
    """A host whose first address does not answer (an IPv6 address on an IPv4-only network)
    is fetched from its next checked address, still without resolving again."""
    checked, internal = servers
    lookups = dns(["127.0.0.3", "127.0.0.1"], ["127.0.0.2"])  # nothing listens on 127.0.0.3
    got = fetch_image(f"http://{HOST}:{checked.server_address[1]}/xray.png", LOCAL)
    assert got.data == PNG and internal.connections == 0 and len(lookups) == 1
