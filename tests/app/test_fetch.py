"""URL fetching refuses server-side request forgery; a local server on 127.0.0.1 (allowed only
through the test-only switch) stands in for a public host. No traffic leaves loopback."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pneumo.app.fetch import FetchError, FetchPolicy, check_address, fetch_image

LOCAL = FetchPolicy(allow_loopback=True, timeout_s=5)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (32, 32), 128).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", ctype="image/png", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path
        if path == "/xray.png":
            self._send(200, PNG)
        elif path == "/page":
            self._send(200, b"<html>hi</html>", "text/html")
        elif path == "/big":
            self._send(200, b"\0" * 200_000)
        elif path == "/big-chunked":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"\0" * 10_000)
        elif path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            target = "/xray.png" if n == 0 else f"/hop/{n - 1}"
            self._send(302, ctype="text/plain", headers=[("Location", target)])
        elif path == "/to-private":
            self._send(302, ctype="text/plain", headers=[("Location", "http://10.1.2.3/x.png")])
        elif path == "/to-metadata":
            self._send(
                301,
                ctype="text/plain",
                headers=[("Location", "http://169.254.169.254/latest/meta-data/")],
            )
        elif path == "/to-file":
            self._send(302, ctype="text/plain", headers=[("Location", "file:///etc/passwd")])
        elif path == "/slow":
            time.sleep(3)
            self._send(200, PNG)
        else:
            self._send(404, b"nope", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetches_an_image(server):
    got = fetch_image(server + "/xray.png", LOCAL)
    assert got.data == PNG and got.content_type == "image/png" and got.name == "xray.png"


def test_follows_up_to_three_redirects(server):
    got = fetch_image(server + "/hop/2", LOCAL)  # three redirects
    assert got.data == PNG and got.url.endswith("/xray.png")
    with pytest.raises(FetchError, match="too many redirects"):
        fetch_image(server + "/hop/3", LOCAL)  # four


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-private", "10.1.2.3 is a private address"),
        ("/to-metadata", "169.254.169.254 is a link-local address"),
        ("/to-file", "only http:// and https://"),
    ],
)
def test_redirect_to_forbidden_target_is_refused(server, path, message):
    with pytest.raises(FetchError, match=message):
        fetch_image(server + path, LOCAL)


def test_non_image_content_type_is_refused(server):
    with pytest.raises(FetchError, match="not an image.*text/html"):
        fetch_image(server + "/page", LOCAL)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_size_cap(server, path):
    with pytest.raises(FetchError, match="too large"):
        fetch_image(server + path, FetchPolicy(allow_loopback=True, max_bytes=100_000))


def test_timeout(server):
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch_image(server + "/slow", FetchPolicy(allow_loopback=True, timeout_s=0.5))
    assert time.monotonic() - start < 2.5


def test_http_error_status(server):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_image(server + "/missing", LOCAL)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/x.png", "loopback"),
        ("http://localhost:8501/", "loopback"),
        ("http://10.0.0.5/x.png", "private"),
        ("http://192.168.1.1/x.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/x.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/x.png", "loopback"),
        ("http://[fe80::1]/x.png", "link-local"),
        ("http://0.0.0.0/x.png", "refused"),
        ("http://224.0.0.1/x.png", "multicast"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("ftp://example.org/x.png", "only http:// and https://"),
        ("gopher://example.org/", "only http:// and https://"),
        ("example.org/x.png", "without http"),
        ("http://user:pw@example.org/x.png", "user name or password"),
    ],
)
def test_refused_before_any_connection(url, message):
    # The default policy: loopback is refused too; the check happens before connecting.
    with pytest.raises(FetchError, match=message):
        fetch_image(url)


def test_test_switch_allows_only_loopback():
    check_address("127.0.0.1", LOCAL)
    check_address("::1", LOCAL)
    for ip in ("10.0.0.1", "172.16.0.1", "169.254.169.254", "100.64.0.1", "fc00::1"):
        with pytest.raises(FetchError):
            check_address(ip, LOCAL)
    check_address("93.184.216.34", FetchPolicy())  # a public address passes the check


def test_policy_is_checked():
    with pytest.raises(ValueError, match="max_bytes"):
        FetchPolicy(max_bytes=0)
