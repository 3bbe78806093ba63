"""A throw-away Orthanc PACS for the tests: a private configuration and storage in a temp
folder, HTTP on loopback only, free ports, stopped and removed at the end (and by a watchdog
when the test run itself is killed), as ``postgres_server`` does for PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from postgres_server import free_port  # one helper for every server the tests start


def find_orthanc() -> str | None:
    """The Orthanc binary: $PNEUMO_ORTHANC, PATH, then Debian's /usr/sbin."""
    if os.environ.get("PNEUMO_ORTHANC"):
        return os.environ["PNEUMO_ORTHANC"]
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None
    )


@dataclass
class Orthanc:
    """A running Orthanc: REST at ``url``, DICOM at ``dicom_port`` with ``ae_title``."""

    url: str
    dicom_port: int
    ae_title: str
    config_path: Path

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)


@contextlib.contextmanager
def running_orthanc(
    binary: str, modalities: dict[str, list], dicom_port: int | None = None
) -> Iterator[Orthanc]:
    """Start Orthanc knowing ``modalities`` (name -> [AE, host, port]) and stop it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="pneumo-orthanc-"))
    http_port, dicom_port = free_port(), dicom_port or free_port()
    config = {
        "Name": "pneumo-test-pacs",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,  # HTTP answers loopback only
        "AuthenticationEnabled": False,
        "DicomModalities": modalities,
        "DicomAlwaysAllowStore": False,  # only the modalities above may store
        "DicomCheckModalityHost": True,
        "Plugins": [],
        "ConcurrentJobs": 1,
        "StableAge": 1,
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (root / "orthanc.log").open("w")
    proc = subprocess.Popen(
        [binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=root
    )
    watchdog = subprocess.Popen(
        [
            "sh",
            "-c",
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"kill {proc.pid}; sleep 2; rm -rf {shlex.quote(str(root))}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(root / 'orthanc.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/system", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within 60 s")
            time.sleep(0.2)
        yield Orthanc(url, dicom_port, "ORTHANC", config_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        watchdog.kill()
        watchdog.wait()
        shutil.rmtree(root, ignore_errors=True)
