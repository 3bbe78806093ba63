"""`pneumo --help` and a one-file `pneumo predict` stay quick to start: building the command
line must not load the heavy libraries (torch alone takes about a second here)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "timm", "onnxruntime", "openvino", "ray", "streamlit", "scipy")

PROBE = """
import json, sys
from pneumo.cli import build_parser
parser = build_parser()
for command in ("train", "predict", "serve", "evaluate", "app", "data"):
    try:
        parser.parse_args([command, "--help"])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_the_command_line_builds_without_heavy_libraries():
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
