"""Fixtures shared by the whole suite: the real data set (skipped when absent) and small
generated data sets in the official layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postgres_server import find_pg_bin, running_postgres
from synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _real_root() -> Path | None:
    root = Path(os.environ.get("PNEUMO_DATA", SHARED / "chest_xray"))
    return root if (root / "train").is_dir() else None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The shared Kermany copy; tests using it skip with a reason when it is absent."""
    root = _real_root()
    if root is None:
        pytest.skip("real data not found: set PNEUMO_DATA to the chest_xray folder")
    return root


@pytest.fixture(scope="session")
def originals_dir() -> Path:
    """Full-size original JPEGs (../shared/data/originals)."""
    root = Path(os.environ.get("PNEUMO_ORIGINALS", SHARED / "originals"))
    if not root.is_dir():
        pytest.skip("original full-size images not found: set PNEUMO_ORIGINALS")
    return root


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    """Exported ONNX files and feature caches go to a temporary folder, never the home folder."""
    path = tmp_path_factory.mktemp("pneumo-cache")
    old = os.environ.get("PNEUMO_CACHE")
    os.environ["PNEUMO_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PNEUMO_CACHE", None)
    else:
        os.environ["PNEUMO_CACHE"] = old


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A small generated data set: train 24/24, val 4/4, test 6/6 images of 64x64."""
    return write_dataset(
        tmp_path / "chest_xray", {"train": (24, 24), "val": (4, 4), "test": (6, 6)}
    )


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on loopback for the session. Skipped only when its binaries are
    missing and PNEUMO_REQUIRE_POSTGRES is unset (CI sets it: there it must run)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("PNEUMO_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL binaries not found (apt-get install postgresql)")
        pytest.skip("PostgreSQL not installed: apt-get install postgresql")
    with running_postgres(bin_dir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database: a SQLite file, then a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "records.db")
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(autouse=True)
def no_dataloader_sigchld_handler():
    """After each test, SIGCHLD goes back to the default. A DataLoader with worker processes
    leaves torch's SIGCHLD handler installed in the pytest process for good; with it, pytest
    died with SIGSEGV when a later test's subprocess exited (gdb: in the main thread, at signal
    delivery). The handler only watches that test's DataLoader workers."""
    import signal

    yield
    if signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
