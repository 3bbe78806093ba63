"""Without an optional part (app, API, DICOM), the command that needs it says which extra to
install, in one line, and everything else goes on working."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKED = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed
from pneumo.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(blocked: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, blocked, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        ("fastapi", ["serve", "--port", "8999"], "api"),
        ("streamlit", ["app", "--port", "8999"], "app"),
    ],
)
def test_a_command_without_its_extra_names_it(blocked, argv, extra):
    done = _run(blocked, *argv)
    assert done.returncode == 2
    assert f"pip install 'pneumo[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_dicom_without_its_extra_is_a_row_error_and_other_films_go_on(tmp_path):
    from corpus import dicom, xray

    (tmp_path / "film.dcm").write_bytes(dicom())
    xray().save(tmp_path / "film.png")
    out = tmp_path / "rows.csv"
    done = _run("pydicom", "predict", str(tmp_path), "-o", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split(",")[0].rsplit("/", 1)[-1]: line for line in out.read_text().splitlines()}
    assert "pip install 'pneumo[dicom]'" in rows["film.dcm"]
    assert "pip install" not in rows["film.png"]
