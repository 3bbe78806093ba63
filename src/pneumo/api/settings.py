"""API settings, read from the environment once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pneumo import limits
from pneumo.errors import PneumoError
from pneumo.settings_env import EnvReader

MIN_API_KEY_LENGTH = 8
"""Shortest PNEUMO_API_KEY accepted: a shorter one is guessed in a few requests."""


@dataclass(frozen=True)
class ApiSettings:
    """How the REST API runs; ``from_env`` reads the ``PNEUMO_*`` variables."""

    api_key: str | None = None
    """Required in the ``X-API-Key`` header when set (PNEUMO_API_KEY, at least
    ``MIN_API_KEY_LENGTH`` characters); open API when None."""
    max_upload_mb: float = limits.MAX_UPLOAD_MIB
    """Largest request body accepted, in MiB (PNEUMO_MAX_UPLOAD_MB); larger gets 413."""
    max_files: int = 32
    """Most files in one predict request (PNEUMO_MAX_FILES)."""
    model_dir: Path | None = None
    """Model directory (PNEUMO_MODEL); None means the bundled model."""
    backend: str = "auto"
    """Inference backend: auto, openvino, onnx or torch (PNEUMO_BACKEND)."""
    precision: str = "auto"
    """fp32, bf16, int8, or auto: what the accuracy guard allows (PNEUMO_PRECISION)."""
    batch_wait_ms: float = 2.0
    """How long the first request of a batch waits for others to join it (PNEUMO_BATCH_WAIT_MS):
    a few ms of latency buy one forward pass for many concurrent requests."""
    queue_images: int = 256
    """Images waiting for the network before new requests are turned away with 503 and
    Retry-After (PNEUMO_QUEUE_IMAGES): a bounded wait instead of an unbounded one."""
    threads: int | None = None
    """Intra-op threads per process (PNEUMO_THREADS); None means cores / workers."""
    max_pixels: int = limits.MAX_PIXELS
    """Most decoded pixels per image (PNEUMO_MAX_PIXELS), read from the header before decoding:
    a small PNG can claim 7700x7700 16-bit pixels. Larger images get an error of their own."""
    max_request_pixels: int = 4 * limits.MAX_PIXELS
    """Most decoded pixels per request, all files together (PNEUMO_MAX_REQUEST_PIXELS); files
    beyond it get an error and can be sent again in another request. The API's own limit: one
    request holds a worker, so four largest films at most, however many files it carries."""
    decode_budget_mb: float = limits.DECODE_BUDGET_MIB
    """Memory all concurrent decodes of a process may hold, in MiB (PNEUMO_DECODE_BUDGET_MB);
    decodes beyond it wait their turn."""
    public_docs: bool = False
    """With an API key set, /docs, /redoc and /openapi.json need the key too, unless this is
    true (PNEUMO_PUBLIC_DOCS=1). Without a key everything is open anyway."""

    # --- slow clients: how long a request may take to arrive (issue 18) ---------------------
    read_timeout_s: float = 10.0
    """Longest pause while a request arrives (PNEUMO_READ_TIMEOUT_S): its headers must be
    complete within it, and a body that pauses longer is answered 408 and disconnected."""
    min_upload_kib_s: float = 64.0
    """Slowest average upload accepted once the first PNEUMO_READ_TIMEOUT_S seconds are over
    (PNEUMO_MIN_UPLOAD_KIB_S, KiB/s): a body dripping in slower is answered 408, so no client
    holds a connection by sending a byte now and then."""

    # --- observability (issue 19) -----------------------------------------------------------
    public_metrics: bool = False
    """With an API key set, /metrics needs the key too (Prometheus sends it with
    ``http_headers``), unless this is true (PNEUMO_PUBLIC_METRICS=1)."""

    def __post_init__(self):
        if self.api_key is not None and len(self.api_key) < MIN_API_KEY_LENGTH:
            raise PneumoError(
                f"PNEUMO_API_KEY must be at least {MIN_API_KEY_LENGTH} characters, "
                f"got {len(self.api_key)}"
            )
        if not 0 < self.max_upload_mb <= 1024:
            raise PneumoError(
                f"PNEUMO_MAX_UPLOAD_MB must be in (0, 1024], got {self.max_upload_mb}"
            )
        if self.max_files < 1:
            raise PneumoError(f"PNEUMO_MAX_FILES must be >= 1, got {self.max_files}")
        from pneumo.inference.engine import BACKENDS, SERVING_PRECISIONS

        if self.backend not in BACKENDS:
            raise PneumoError(
                f"PNEUMO_BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.precision not in SERVING_PRECISIONS:
            raise PneumoError(
                f"PNEUMO_PRECISION must be one of {', '.join(SERVING_PRECISIONS)}, got {self.precision!r}"
            )
        if not 0 <= self.batch_wait_ms <= 1000:
            raise PneumoError(f"PNEUMO_BATCH_WAIT_MS must be in 0..1000, got {self.batch_wait_ms}")
        if self.queue_images < 1:
            raise PneumoError(f"PNEUMO_QUEUE_IMAGES must be >= 1, got {self.queue_images}")
        if self.threads is not None and self.threads < 1:
            raise PneumoError(f"PNEUMO_THREADS must be >= 1, got {self.threads}")
        if not 16 * 16 <= self.max_pixels <= 500_000_000:
            raise PneumoError(f"PNEUMO_MAX_PIXELS must be in 256..500000000, got {self.max_pixels}")
        if self.max_request_pixels < self.max_pixels:
            raise PneumoError("PNEUMO_MAX_REQUEST_PIXELS must be at least PNEUMO_MAX_PIXELS")
        if not 64 <= self.decode_budget_mb <= 1024 * 1024:
            raise PneumoError(
                f"PNEUMO_DECODE_BUDGET_MB must be at least 64, got {self.decode_budget_mb}"
            )
        self._check_slow_client_limits()

    def _check_slow_client_limits(self) -> None:
        if not 0.1 <= self.read_timeout_s <= 3600:
            raise PneumoError(
                f"PNEUMO_READ_TIMEOUT_S must be in 0.1..3600, got {self.read_timeout_s}"
            )
        if not 1 <= self.min_upload_kib_s <= 1024 * 1024:
            raise PneumoError(
                f"PNEUMO_MIN_UPLOAD_KIB_S must be in 1..1048576, got {self.min_upload_kib_s}"
            )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ApiSettings:
        read = EnvReader(env)
        model = read.text("PNEUMO_MODEL")
        return cls(
            # the key is compared as given: whitespace in it is part of the secret
            api_key=read.env.get("PNEUMO_API_KEY") or None,
            max_upload_mb=read.number("PNEUMO_MAX_UPLOAD_MB", float, cls.max_upload_mb),
            max_files=read.number("PNEUMO_MAX_FILES", int, cls.max_files),
            model_dir=Path(model) if model else None,
            backend=read.text("PNEUMO_BACKEND", cls.backend),
            precision=read.text("PNEUMO_PRECISION", cls.precision),
            batch_wait_ms=read.number("PNEUMO_BATCH_WAIT_MS", float, cls.batch_wait_ms),
            queue_images=read.number("PNEUMO_QUEUE_IMAGES", int, cls.queue_images),
            threads=read.number("PNEUMO_THREADS", int, None),
            max_pixels=read.number("PNEUMO_MAX_PIXELS", int, cls.max_pixels),
            max_request_pixels=read.number(
                "PNEUMO_MAX_REQUEST_PIXELS", int, cls.max_request_pixels
            ),
            decode_budget_mb=read.number("PNEUMO_DECODE_BUDGET_MB", float, cls.decode_budget_mb),
            public_docs=read.flag("PNEUMO_PUBLIC_DOCS", cls.public_docs),
            # slow clients
            read_timeout_s=read.number("PNEUMO_READ_TIMEOUT_S", float, cls.read_timeout_s),
            min_upload_kib_s=read.number("PNEUMO_MIN_UPLOAD_KIB_S", float, cls.min_upload_kib_s),
            # observability
            public_metrics=read.flag("PNEUMO_PUBLIC_METRICS", cls.public_metrics),
        )
