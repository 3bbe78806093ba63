"""OpenVINO on CPU: the fastest backend on x86 here (AMX bf16 and int8; figures in
``benchmarks/``). The ONNX export is converted once to OpenVINO IR beside it in the per-machine
cache, and OpenVINO's own CACHE_DIR keeps the compiled blob, so a warm start is a file read."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
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

FP32_LEADING_CONVOLUTIONS = 2
"""bf16 runs the network after its first two convolutions in bf16; those two stay fp32, up to
the first point where a single tensor carries everything the rest needs. They see the raw
pixels, and the batch norms after them divide by small spreads (up to 347x and 41x on the
bundled Lite2), so bf16's rounding there is amplified through the whole network: all-bf16 moved
the validation log-odds by up to 2.57 and changed 28 of 786 decisions; with the two fp32, by
0.62 and 5, for about 13% of fp32's time. (Marking nodes fp32 through their runtime info had no
effect on the CPU plugin, hence two compiled parts.)"""


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

BF16_RECIPE = "2"
"""Bumped when what bf16 runs changes (2: the leading convolutions in fp32), so guard reports
measured on the old one are not reused."""


def cached_ir_path(model_dir: str | Path, precision: str = "fp32") -> Path:
    """IR (``.xml`` + ``.bin``) of ``model_dir``: fp32 (converted from ONNX) or int8 (NNCF)."""
    from pneumo.inference.export import EXPORT_VERSION, weights_digest

    suffix = "" if precision == "fp32" else f".{precision}-r{INT8_RECIPE}"
    return ov_cache_dir() / f"{weights_digest(model_dir)}.v{EXPORT_VERSION}{suffix}.xml"


def ensure_ir(model_dir: str | Path) -> Path:
    """The fp32 IR of ``model_dir``, converted from the cached ONNX export on first use."""
    import openvino as ov

    from pneumo.inference.export import ensure_onnx

    xml = cached_ir_path(model_dir)
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    onnx_path = ensure_onnx(model_dir)
    try:
        save_ir(ov.Core().read_model(str(onnx_path)), xml)
    except Exception as exc:
        raise ModelError(f"{model_dir}: conversion to OpenVINO failed ({exc})") from exc
    return xml


def save_ir(model, xml: Path) -> None:
    """Write ``model`` as the IR pair ``xml`` + ``.bin`` so that a reader never sees half of
    it: both are written under a temporary name, the ``.bin`` moved in first."""
    import openvino as ov

    from pneumo.files import temporary_beside

    tmp = temporary_beside(xml)  # reserves a name; the IR pair is written beside it
    tmp_xml = tmp.with_suffix(".xml")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        tmp_xml.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp_xml.replace(xml)
    finally:
        for leftover in (tmp, tmp_xml, tmp_xml.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)


MAX_STREAMS = 4
"""At most this many single-threaded streams; more threads than that go into each stream."""


def stream_count(threads: int) -> int:
    """Streams for ``threads`` cores: one thread each, up to ``MAX_STREAMS``."""
    return max(1, min(threads, MAX_STREAMS))


def compile_model(model, precision: str, threads: int, streams: int | None = None):
    """A CPU compiled model (``model``: an IR path or an ``ov.Model``) with ``streams``
    (default ``stream_count(threads)``) streams sharing ``threads``. On 2 busy cores two one-thread
    streams, each running half the batch, ran about 1.35x the images of one two-thread stream:
    no barrier between threads for a decode thread to stall. The blob is cached so later starts
    skip compilation."""
    import openvino as ov

    cache = ov_cache_dir() / "blobs"
    cache.mkdir(parents=True, exist_ok=True)
    config = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": streams or stream_count(threads),
        "CACHE_DIR": str(cache),
        "ENABLE_CPU_PINNING": False,  # decode threads share the cores: let the OS place them
    }
    try:
        return ov.Core().compile_model(
            model if not isinstance(model, Path) else str(model), "CPU", config
        )
    except Exception as exc:
        raise ModelError(f"{model}: OpenVINO cannot compile this model ({exc})") from None


@dataclass(frozen=True)
class SplitGraph:
    """A graph cut in two for bf16 with an fp32 head (``FP32_LEADING_CONVOLUTIONS``)."""

    head: object
    """The leading layers (an ``ov.Model``, or the path of its IR), run at fp32. Output 0 is
    the cut tensor at fp32 (kept for films run again), output 1 the same rounded to bf16 (half
    the bytes to pass on; the rest would round it anyway)."""
    rest: object
    """The remaining layers, reading the bf16 cut tensor: run at bf16."""
    rest_fp32: object
    """The same layers reading the fp32 cut tensor: head + this is the fp32 network, for the
    films a cascade runs again."""


def split_after_convolutions(xml: str | Path, count: int) -> SplitGraph | None:
    """The graph at ``xml`` cut at the first tensor after its first ``count`` convolutions that
    alone carries everything the rest needs (not inside a residual block, and no shape read
    from the input later), or None when there is no such point."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    ops = model.get_ordered_ops()
    convolutions = [i for i, op in enumerate(ops) if op.get_type_name() in _CONVOLUTIONS]
    if len(convolutions) <= count:
        return None
    position = {op.get_friendly_name(): i for i, op in enumerate(ops)}
    if len(position) != len(ops):  # names are how the cut is found again: they must be unique
        return None
    for i in range(convolutions[count - 1], convolutions[-1]):  # a convolution left for bf16
        op = ops[i]
        if op.get_type_name() in ("Constant", "Result") or op.get_output_size() != 1:
            continue
        if not _only_tensor_across(ops, position, i):
            continue
        rounded = ov.opset13.convert(op.output(0), ov.Type.bf16)
        head = ov.Model([op.output(0), rounded.output(0)], model.get_parameters(), "head")
        name = op.get_friendly_name()
        return SplitGraph(
            head, _rest_after(xml, name, ov.Type.bf16), _rest_after(xml, name, ov.Type.f32)
        )
    return None


def _rest_after(xml: str | Path, name: str, element_type):
    """The graph at ``xml`` after op ``name``, whose output it reads as an input of
    ``element_type`` (converted to f32 inside where that is not f32)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    cut = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)
    entry = ov.opset13.parameter(cut.output(0).get_partial_shape(), element_type, name="cut")
    source = entry if element_type == ov.Type.f32 else ov.opset13.convert(entry, ov.Type.f32)
    for target in list(cut.output(0).get_target_inputs()):
        target.replace_source_output(source.output(0))
    return ov.Model(model.get_results(), [entry], "rest")


def split_ir(xml: str | Path) -> SplitGraph | None:
    """``split_after_convolutions(xml, FP32_LEADING_CONVOLUTIONS)`` with its three parts as IR
    files beside ``xml`` (written on first use), so a start reads them instead of cutting the
    graph again (0.1 s of every `pneumo predict`). None when the graph has no such cut."""
    xml = Path(xml)
    stem = f"{xml.stem}.bf16-b{BF16_RECIPE}"
    paths = {part: xml.with_name(f"{stem}.{part}.xml") for part in ("head", "rest", "rest_fp32")}
    none = xml.with_name(f"{stem}.nocut")
    if none.is_file():
        return None
    if not all(path.is_file() and path.with_suffix(".bin").is_file() for path in paths.values()):
        parts = split_after_convolutions(xml, FP32_LEADING_CONVOLUTIONS)
        try:
            if parts is None:
                none.touch()
                return None
            for part, path in paths.items():
                save_ir(getattr(parts, part), path)
        except OSError:  # a read-only cache: cut again at each start
            return parts
    return SplitGraph(*(Path(path) for path in paths.values()))


_CONVOLUTIONS = ("Convolution", "GroupConvolution")


def _only_tensor_across(ops, position: dict[str, int], cut: int) -> bool:
    """Whether the output of ``ops[cut]`` is the only tensor made at or before it (constants
    aside) that an op after it reads."""
    for op in ops[cut + 1 :]:
        for value in op.input_values():
            source = value.get_node()
            if source.get_type_name() == "Constant":
                continue
            at = position[source.get_friendly_name()]
            if at <= cut and not (at == cut and value.get_index() == 0):
                return False
    return True


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
        parts = split_ir(xml) if precision == "bf16" else None
        self._head = self._again = None
        if parts is None:
            self.compiled = compile_model(self.model_path, precision, self.threads)
        else:
            self._head = compile_model(parts.head, "fp32", self.threads)
            self.compiled = compile_model(parts.rest, precision, self.threads)
            # the rest at fp32 for the few films a cascade runs again: one stream on all the
            # threads, as those come one or two at a time
            self._again = compile_model(parts.rest_fp32, "fp32", self.threads, streams=1)
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
        requests = self._requests("requests", self.compiled)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = np.array_split(batch, min(len(requests), len(batch)))
        if self._head is None:
            for request, part in zip(requests, parts, strict=False):
                request.start_async({0: part})
        else:
            heads = self._requests("heads", self._head)
            for head, part in zip(heads, parts, strict=False):
                head.start_async({0: part})
            kept = []
            for request, head in zip(requests, heads[: len(parts)], strict=False):
                head.wait()  # each stream goes on as soon as its own head is done
                kept.append(head.get_output_tensor(0).data)  # valid until this thread's next call
                request.start_async({0: head.get_output_tensor(1)})  # copied in
            self._local.kept = kept
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

    def _requests(self, key: str, compiled) -> list:
        """This thread's infer requests on ``compiled``, one per stream (made on first use)."""
        requests = getattr(self._local, key, None)
        if requests is None:
            requests = [compiled.create_infer_request() for _ in range(self.streams)]
            setattr(self._local, key, requests)
        return requests

    def forward_again(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """From the fp32 head's output kept from the last batch: only the rest runs at fp32.
        None when this graph is not split."""
        kept = getattr(self._local, "kept", None)
        if self._again is None or kept is None:
            return None
        starts = np.cumsum([0] + [len(part) for part in kept])
        part = np.searchsorted(starts, rows, side="right") - 1  # not one concatenation of all
        picked = np.stack([kept[k][row - starts[k]] for k, row in zip(part, rows, strict=True)])
        request = self._requests("again", self._again)[0]
        request.infer({0: picked})
        return (
            np.array(request.get_tensor(self._again.output("logits")).data),
            np.array(request.get_tensor(self._again.output("features")).data),
        )
