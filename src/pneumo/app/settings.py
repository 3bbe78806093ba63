"""The app's settings, read from the environment once per page run (`pneumo app` sets it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pneumo import limits
from pneumo.app.fetch import FetchPolicy
from pneumo.errors import PneumoError
from pneumo.inference.engine import DEFAULT_BACKEND, check_backend
from pneumo.settings_env import EnvReader


@dataclass(frozen=True)
class AppSettings:
    """Everything the app can be configured with (environment variables in brackets)."""

    model_dir: str | None = None
    """Model directory [PNEUMO_MODEL]; None: the bundled default model."""
    db: str | None = None
    """SQLAlchemy URL or SQLite file [PNEUMO_DB]; None: ~/.local/share/pneumo/pneumo.db."""
    backend: str = DEFAULT_BACKEND
    """Inference backend [PNEUMO_BACKEND], as for `pneumo predict` and `pneumo serve`: auto
    (OpenVINO when installed, else ONNX Runtime), openvino, onnx or torch."""
    max_upload_mb: float = limits.MAX_UPLOAD_MIB
    """Largest accepted file, uploaded or fetched, in MiB [PNEUMO_MAX_UPLOAD_MB]."""
    max_pixels: int = limits.MAX_PIXELS
    """Images with more pixels are refused before decoding (decompression bombs)."""
    max_files: int = 50
    """Most images classified per submission; the rest get an error."""
    fetch_timeout_s: float = 10.0
    """Deadline for fetching an image URL, redirects included."""

    def __post_init__(self):
        try:
            check_backend(self.backend, "PNEUMO_BACKEND")
        except PneumoError as exc:
            raise ValueError(str(exc)) from None
        if not 0 < self.max_upload_mb <= 1000:
            raise ValueError(f"max_upload_mb must be in (0, 1000] MiB, got {self.max_upload_mb}")
        if self.max_pixels < 16 * 16 or self.max_files < 1 or self.fetch_timeout_s <= 0:
            raise ValueError("max_pixels, max_files and fetch_timeout_s must be positive")

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * limits.MiB)

    @property
    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(timeout_s=self.fetch_timeout_s, max_bytes=self.max_bytes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppSettings:
        """Settings from ``env`` (default ``os.environ``), read as the API reads its own."""
        read = EnvReader(env)
        try:
            return cls(
                model_dir=read.text("PNEUMO_MODEL"),
                db=read.text("PNEUMO_DB"),
                backend=read.text("PNEUMO_BACKEND", cls.backend),
                max_upload_mb=read.number("PNEUMO_MAX_UPLOAD_MB", float, cls.max_upload_mb),
            )
        except (ValueError, PneumoError) as exc:
            raise PneumoError(f"bad app setting in the environment: {exc}") from None
