"""API settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import PneumoError


@dataclass(frozen=True)
class ApiSettings:
    """How the REST API runs; ``from_env`` reads the ``PNEUMO_*`` variables."""

    api_key: str | None = None
    """Required in the ``X-API-Key`` header when set (PNEUMO_API_KEY); open API when None."""
    max_upload_mb: float = 20.0
    """Largest request body accepted, in MiB (PNEUMO_MAX_UPLOAD_MB); larger gets 413."""
    max_files: int = 32
    """Most files in one predict request (PNEUMO_MAX_FILES)."""
    model_dir: Path | None = None
    """Model directory (PNEUMO_MODEL); None means the bundled model."""
    backend: str = "onnx"
    """Inference backend, onnx or torch (PNEUMO_BACKEND)."""
    threads: int | None = None
    """Intra-op threads per process (PNEUMO_THREADS); None means cores / workers."""

    def __post_init__(self):
        if self.api_key is not None and len(self.api_key) < 8:
            raise PneumoError("PNEUMO_API_KEY must be at least 8 characters")
        if not 0 < self.max_upload_mb <= 1024:
            raise PneumoError(
                f"PNEUMO_MAX_UPLOAD_MB must be in (0, 1024], got {self.max_upload_mb}"
            )
        if self.max_files < 1:
            raise PneumoError(f"PNEUMO_MAX_FILES must be >= 1, got {self.max_files}")
        if self.backend not in ("onnx", "torch"):
            raise PneumoError(f"PNEUMO_BACKEND must be onnx or torch, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise PneumoError(f"PNEUMO_THREADS must be >= 1, got {self.threads}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ApiSettings:
        env = dict(os.environ if env is None else env)

        def number(name: str, kind, default):
            value = env.get(name, "").strip()
            if not value:
                return default
            try:
                return kind(value)
            except ValueError:
                raise PneumoError(f"{name} must be a number, got {value!r}") from None

        model = env.get("PNEUMO_MODEL", "").strip()
        return cls(
            api_key=env.get("PNEUMO_API_KEY") or None,
            max_upload_mb=number("PNEUMO_MAX_UPLOAD_MB", float, cls.max_upload_mb),
            max_files=number("PNEUMO_MAX_FILES", int, cls.max_files),
            model_dir=Path(model) if model else None,
            backend=env.get("PNEUMO_BACKEND", "").strip() or cls.backend,
            threads=number("PNEUMO_THREADS", int, None),
        )
