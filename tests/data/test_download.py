"""`pneumo data download` against a local HTTP server on 127.0.0.1 (never the internet): fast
offline failure, resume after an interruption, checksum, unpacking into the expected layout,
and refusal of archive members that would escape the destination."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from data_helpers import jpeg_bytes

from pneumo.data.discover import find_images
from pneumo.data.download import DATASET_PAGE, download_dataset, unpack_archive
from pneumo.errors import DataError

IMAGES = {
    "chest_xray/train/NORMAL/IM-0001-0001.jpeg": jpeg_bytes(1),
    "chest_xray/train/PNEUMONIA/person2_virus_3.jpeg": jpeg_bytes(2),
    "chest_xray/val/NORMAL/NORMAL2-IM-0003-0001.jpeg": jpeg_bytes(3),
    "chest_xray/test/PNEUMONIA/person4_bacteria_5.jpeg": jpeg_bytes(4),
}
JUNK = {
    "__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg": b"\x00\x05\x16\x07",
    "chest_xray/.DS_Store": b"\x00\x00\x00\x01Bud1",
    "chest_xray/train/NORMAL/._IM-0001-0001.jpeg": b"\x00\x05\x16\x07",
}


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


class ArchiveServer:
    """Serves ``payload`` at /archive with HTTP Range support, and /file_downloaded redirecting
    to it (as Mendeley does). ``cut_first`` ends the first response after that many bytes."""

    def __init__(self, payload: bytes, cut_first: int | None = None):
        self.payload, self.cut_first, self.ranges = payload, cut_first, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/file_downloaded":
                    self.send_response(302)
                    self.send_header("Location", "/archive")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, start = server.payload, 0
                server.ranges.append(self.headers.get("Range"))
                if m := re.match(r"bytes=(\d+)-$", self.headers.get("Range") or ""):
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_first is not None:
                    body, server.cut_first = body[: server.cut_first], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file_downloaded"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, cut_first: int | None = None) -> ArchiveServer:
        servers.append(ArchiveServer(payload, cut_first))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ChestXRay2017.zip"


def test_offline_fails_within_seconds_and_says_where_to_put_the_data(cli, tmp_path):
    started = time.monotonic()
    code, _, err = cli("data", "download", "--dest", tmp_path / "data", "--url", closed_port_url())
    assert time.monotonic() - started < 5
    assert code == 2 and err.startswith("error: no network")
    assert DATASET_PAGE in err and "ChestXRay2017.zip" in err
    assert str(tmp_path / "data" / "chest_xray") in err and "PNEUMO_DATA" in err
    assert not (tmp_path / "data").exists()  # nothing half-made


def test_unresolvable_host_fails_within_the_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(DataError, match="no network.*pneumo-test.invalid"):
        download_dataset(tmp_path, url="https://pneumo-test.invalid/x.zip", connect_timeout=2)
    assert time.monotonic() - started < 6


def test_interrupted_download_resumes_checks_and_unpacks(cli, serve, tmp_path):
    payload = make_zip({**JUNK, **IMAGES})
    server = serve(payload, cut_first=len(payload) // 2)
    dest = tmp_path / "data"

    code, _, err = cli("data", "download", "--dest", dest, "--url", server.url)
    assert code == 2 and "interrupted" in err and "run the same command again to resume" in err
    part = dest / "ChestXRay2017.zip.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(payload) // 2
    assert not (dest / "chest_xray").exists()

    digest = hashlib.sha256(payload).hexdigest()
    code, out, _ = cli("data", "download", "--dest", dest, "--url", server.url, "--sha256", digest)
    assert code == 0
    assert server.ranges == [None, f"bytes={kept}-"]  # the second request resumed
    assert f"resumed after {kept:,} bytes" in out and f"sha256 {digest}" in out
    assert (dest / "ChestXRay2017.zip").read_bytes() == payload and not part.exists()

    root = dest / "chest_xray"
    unpacked = sorted(p.relative_to(dest).as_posix() for p in root.rglob("*") if p.is_file())
    assert unpacked == sorted(IMAGES)  # no __MACOSX, ._ or .DS_Store files
    assert (dest / "chest_xray/val/NORMAL/NORMAL2-IM-0003-0001.jpeg").read_bytes() == jpeg_bytes(3)
    assert len(find_images(root)) == 4
    assert f"unpacked 4 images into {root}" in out and f"--data {root}" in out


def test_checksum_mismatch_removes_the_archive(cli, serve, tmp_path):
    server = serve(make_zip(IMAGES))
    code, _, err = cli(
        "data", "download", "--dest", tmp_path, "--url", server.url, "--sha256", "0" * 64
    )
    assert code == 2 and "checksum mismatch" in err and "0" * 64 in err
    assert not (tmp_path / "ChestXRay2017.zip").exists()
    assert not (tmp_path / "chest_xray").exists()


def test_existing_archive_is_unpacked_offline_and_existing_data_kept(cli, tmp_path):
    (tmp_path / "ChestXRay2017.zip").write_bytes(make_zip(IMAGES))
    code, out, _ = cli("data", "download", "--dest", tmp_path, "--url", closed_port_url())
    assert code == 0 and "unpacked 4 images" in out
    code, out, _ = cli("data", "download", "--dest", tmp_path, "--url", closed_port_url())
    assert code == 0 and "already holds 4 images" in out


@pytest.mark.parametrize(
    "evil", ["../evil.jpeg", "/tmp/pneumo-evil.jpeg", "chest_xray/../../e.jpeg"]
)
def test_members_escaping_the_destination_are_refused(cli, tmp_path, evil):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ChestXRay2017.zip").write_bytes(make_zip({**IMAGES, evil: b"x"}))
    code, _, err = cli("data", "download", "--dest", dest, "--url", closed_port_url())
    assert code == 2 and "refusing archive member" in err and evil in err
    assert not (tmp_path / "evil.jpeg").exists() and not (tmp_path / "e.jpeg").exists()
    assert not (dest / "chest_xray").exists()  # refused before anything was written


def test_tar_archive_with_other_nesting_and_case(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in IMAGES.items():
            name = name.replace("chest_xray/", "ChestXRay2017/chest_xray/").replace(
                "train", "TRAIN"
            )
            info = tarfile.TarInfo(name.replace("/NORMAL/", "/normal/"))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("ChestXRay2017/chest_xray/train/NORMAL/IM-0009-0001.jpeg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "archive.tar.gz"
    archive.write_bytes(buf.getvalue())
    root = unpack_archive(archive, tmp_path / "out")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "test/PNEUMONIA/person4_bacteria_5.jpeg",
        "train/NORMAL/IM-0001-0001.jpeg",
        "train/PNEUMONIA/person2_virus_3.jpeg",
        "val/NORMAL/NORMAL2-IM-0003-0001.jpeg",
    ]  # the symlink was not followed or written


def test_error_page_instead_of_an_archive(tmp_path):
    (tmp_path / "ChestXRay2017.zip").write_bytes(b"<html>Too many requests</html>")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        download_dataset(tmp_path, url=closed_port_url())
