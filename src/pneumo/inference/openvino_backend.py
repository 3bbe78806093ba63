"""OpenVINO on CPU: the fastest backend on x86 here (AMX bf16 and int8; figures in
``benchmarks/``). The ONNX export is converted once to OpenVINO IR beside it in the per-machine
cache, and OpenVINO's own CACHE_DIR keeps the compiled blob, so a warm start is a file read."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.errors import ModelError
from pneumo.extras import installed
from pneumo.inference.export import CAM_OUTPUT
from pneumo.inference.predictor import BATCH_SIZE, Predictor, single_threaded_blas

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""INFERENCE_PRECISION_HINT per precision: int8 comes from the quantised IR itself, its
remaining float layers stay f32 so the guard measures int8 alone."""


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported (without importing it)."""
    return installed("openvino")


def ov_cache_dir() -> Path:
    """Where IR files, compiled blobs and precision-guard reports live on this machine."""
    from pneumo.cache import cache_dir

    return cache_dir() / "openvino"


INT8_RECIPE = "2"
"""Bumped when the quantisation recipe changes, so stale int8 files and guard reports are not
reused."""


def cached_ir_path(model_dir: str | Path, precision: str = "fp32") -> Path:
    """IR (``.xml`` + ``.bin``) of ``model_dir``: fp32 (converted from ONNX) or int8 (NNCF)."""
    from pneumo.inference.export import EXPORT_VERSION, weights_digest

    suffix = "" if precision == "fp32" else f".{precision}-r{INT8_RECIPE}"
    return ov_cache_dir() / f"{weights_digest(model_dir)}.v{EXPORT_VERSION}{suffix}.xml"


def ensure_ir(model_dir: str | Path) -> Path:
    """The fp32 IR of ``model_dir``, converted from the cached ONNX export on first use."""
    import openvino as ov

    from pneumo.files import temporary_beside
    from pneumo.inference.export import ensure_onnx

    xml = cached_ir_path(model_dir)
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    onnx_path = ensure_onnx(model_dir)
    tmp = temporary_beside(xml)  # reserves a name; the IR pair is written beside it
    tmp_xml = tmp.with_suffix(".xml")
    try:
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(tmp_xml), compress_to_fp16=False)
        # .bin first: a reader that sees the .xml always finds its weights
        tmp_xml.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp_xml.replace(xml)
    except Exception as exc:
        raise ModelError(f"{model_dir}: conversion to OpenVINO failed ({exc})") from exc
    finally:
        for leftover in (tmp, tmp_xml, tmp_xml.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    return xml


MAX_STREAMS = 4
"""At most this many single-threaded streams; more threads than that go into each stream."""


def stream_count(threads: int) -> int:
    """Streams for ``threads`` cores: one thread each, up to ``MAX_STREAMS``."""
    return max(1, min(threads, MAX_STREAMS))


def compile_model(xml: str | Path, precision: str, threads: int):
    """A CPU compiled model with ``stream_count(threads)`` streams sharing ``threads``. On 2
    busy cores two one-thread streams, each running half the batch, ran about 1.35x the images
    of one two-thread stream: no barrier between threads for a decode thread to stall. The blob
    is cached so later starts skip compilation."""
    import openvino as ov

    cache = ov_cache_dir() / "blobs"
    cache.mkdir(parents=True, exist_ok=True)
    config = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": stream_count(threads),
        "CACHE_DIR": str(cache),
        "ENABLE_CPU_PINNING": False,  # decode threads share the cores: let the OS place them
    }
    try:
        return ov.Core().compile_model(str(xml), "CPU", config)
    except Exception as exc:
        raise ModelError(f"{xml}: OpenVINO cannot compile this model ({exc})") from None


class OpenVinoPredictor(Predictor):
    """OpenVINO on CPU; one compiled model, one infer request per stream and calling thread (a
    request is not thread-safe, the compiled model is). A batch is split across the streams."""

    backend = "openvino"

    def __init__(
        self,
        xml: str | Path,
        metadata: ModelMetadata,
        ood_tensors: dict[str, np.ndarray] | None = None,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
    ):
        if precision not in HINTS:
            raise ModelError(f"precision {precision!r} is not available for OpenVINO")
        super().__init__(
            metadata, ood_tensors, threads=threads, batch_size=batch_size, precision=precision
        )
        self.model_path = Path(xml)
        self.compiled = compile_model(xml, precision, self.threads)
        single_threaded_blas()
        names = set().union(*(o.get_names() for o in self.compiled.outputs))
        if not {"logits", "features"} <= names:
            raise ModelError(f"{xml}: outputs {sorted(names)}, expected logits and features")
        self._logits = self.compiled.output("logits")
        self._features = self.compiled.output("features")
        self._cam = self.compiled.output(CAM_OUTPUT) if CAM_OUTPUT in names else None
        self.streams = stream_count(self.threads)
        self._local = threading.local()

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features, _ = self._infer(batch, maps=False)
        return logits, features

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cam is None:
            raise ModelError(f"{self.model_path}: this model has no class activation map")
        return self._infer(batch, maps=True)

    def _infer(self, batch: np.ndarray, *, maps: bool):
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
            self._local.requests = requests
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = np.array_split(batch, min(len(requests), len(batch)))
        for request, part in zip(requests, parts, strict=False):
            request.start_async({0: part})
        logits, features, cams = [], [], []
        for request, _ in zip(requests, parts, strict=False):
            request.wait()
            # the request reuses its output buffers on the next call: copy them out
            logits.append(np.array(request.get_tensor(self._logits).data))
            features.append(np.array(request.get_tensor(self._features).data))
            if maps:
                cams.append(np.array(request.get_tensor(self._cam).data))
        return (
            np.concatenate(logits),
            np.concatenate(features),
            np.concatenate(cams) if maps else None,
        )
