"""Every size message says MiB, the unit the limits are defined in (issue 18, item 13: an upload
was "20.6 MB" against a "20 MiB" limit, a URL "over the 21.0 MB limit" of PNEUMO_MAX_UPLOAD_MB=20)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pneumo.app.fetch import FetchError, FetchPolicy, fetch_image
from pneumo.app.intake import read_uploads
from pneumo.app.settings import AppSettings
from pneumo.data.decode import read_bytes
from pneumo.errors import ImageDecodeError

LIMIT_MIB = 0.5
BODY = b"\0" * (600 * 1024)  # 0.59 MiB (0.61 MB)


def _sizes(message: str) -> list[str]:
    """Every 'number unit' in a message."""
    return re.findall(r"(\d+(?:\.\d+)?) ?([KMG]i?B)\b", message)


class _Upload:
    name, size = "big.png", len(BODY)

    def getvalue(self):
        return BODY


class _Big(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path == "/announced":
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_upload_over_the_limit_is_told_in_mib():
    (item,) = read_uploads([_Upload()], AppSettings(max_upload_mb=LIMIT_MIB))
    assert item.error == "big.png: file too large (0.59 MiB; the limit is 0.5 MiB)"


@pytest.mark.parametrize("path", ["/announced", "/streamed"])
def test_a_url_over_the_limit_is_told_in_the_same_unit(server, path):
    policy = AppSettings(max_upload_mb=LIMIT_MIB).fetch_policy
    policy = FetchPolicy(allow_loopback=True, max_bytes=policy.max_bytes, timeout_s=5)
    with pytest.raises(FetchError) as info:
        fetch_image(server + path, policy)
    assert ("0.5", "MiB") in _sizes(str(info.value))
    assert {unit for _, unit in _sizes(str(info.value))} == {"MiB"}


def test_a_file_over_the_decoders_cap_is_told_in_mib(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(BODY)
    with pytest.raises(ImageDecodeError) as info:
        read_bytes(big, "big.png", max_bytes=int(LIMIT_MIB * 2**20))
    assert str(info.value) == "big.png: file too large (0.59 MiB, limit 0.5 MiB)"
