"""Where per-machine files go: feature caches, OpenVINO IR, the accuracy guard's reports."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Per-machine cache (feature caches, exported ONNX, OpenVINO IR): ``$PNEUMO_CACHE`` or
    ``~/.cache/pneumo``."""
    return Path(os.environ.get("PNEUMO_CACHE") or Path.home() / ".cache" / "pneumo")
