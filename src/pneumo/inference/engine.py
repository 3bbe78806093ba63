"""The backends behind ``Predictor``: OpenVINO (the default where installed, with the bf16+fp32
cascade behind an accuracy guard), ONNX Runtime (the fallback) and torch (the reference). Figures for
this machine are in ``benchmarks/``. Build one with ``load_predictor`` once per process and
share it: all are thread-safe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.errors import ModelError
from pneumo.extras import installed, missing_message
from pneumo.inference.predictor import BATCH_SIZE, Predictor, single_threaded_blas
from pneumo.models.checkpoint import WEIGHTS_FILE, read_metadata, resolve_model_dir

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "onnx", "torch")
"""``auto``: OpenVINO when installed, else ONNX Runtime."""
DEFAULT_BACKEND = "auto"
"""What every command and server runs when no backend is named (--backend, PNEUMO_BACKEND)."""
BACKEND_HELP = (
    "inference engine (default: $PNEUMO_BACKEND, else auto: OpenVINO when installed, "
    "else ONNX Runtime)"
)
SERVING_PRECISIONS = ("auto", "fp32", "bf16", "int8", "bf16+fp32", "int8+fp32")
"""``auto``: on OpenVINO, what the accuracy guard chose for this model (a cascade that changes
no decision, or fp32); elsewhere fp32. ``bf16+fp32``: bf16 for every film, fp32 again for the
films near a decision edge (``pneumo.inference.cascade``)."""


def check_backend(backend: str, name: str | None = None) -> str:
    """``backend`` when it is one of ``BACKENDS``; else a one-line error naming ``name`` (the
    option or variable it came from) and the choices."""
    if backend not in BACKENDS:
        what = f"{name} {backend!r}" if name else f"backend {backend!r}"
        raise ModelError(f"unknown {what}; choose one of: {', '.join(BACKENDS)}")
    return backend


def configured_backend(flag: str | None = None) -> str:
    """The backend a command runs: its ``--backend`` flag when given, else ``PNEUMO_BACKEND``,
    else ``auto``; the same rule for predict, serve and the app."""
    import os

    if flag:
        return check_backend(flag, "--backend")
    return check_backend(os.environ.get("PNEUMO_BACKEND") or DEFAULT_BACKEND, "PNEUMO_BACKEND")


def resolve_backend(backend: str = DEFAULT_BACKEND) -> str:
    """The backend ``backend`` stands for on this machine (``auto`` resolved)."""
    if check_backend(backend) != "auto":
        return backend
    from pneumo.inference.openvino_backend import openvino_available

    return "openvino" if openvino_available() else "onnx"


def read_ood_tensors(model_dir: str | Path) -> dict[str, np.ndarray]:
    """The ``ood.*`` statistics stored beside the weights, as numpy (no torch import)."""
    from safetensors import safe_open

    path = Path(model_dir) / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k).astype(np.float32) for k in f.keys() if k.startswith("ood.")}  # noqa: SIM118
    except Exception as exc:
        raise ModelError(f"{path}: corrupt model weights ({exc})") from None


class OnnxPredictor(Predictor):
    """ONNX Runtime on CPU; one session per process, whose ``run`` is thread-safe."""

    backend = "onnx"
    precision = "fp32"

    def __init__(
        self,
        onnx_path: str | Path,
        metadata: ModelMetadata,
        ood_tensors: dict[str, np.ndarray] | None = None,
        *,
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
        graph_optimization: str = "all",
    ):
        import onnxruntime as ort

        levels = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if graph_optimization not in levels:
            raise ModelError(f"graph_optimization must be one of {sorted(levels)}")
        super().__init__(metadata, ood_tensors, threads=threads, batch_size=batch_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = levels[graph_optimization]
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"{onnx_path}: cannot load ONNX model ({exc})") from None
        self.onnx_path = Path(onnx_path)
        self._input = self.session.get_inputs()[0].name
        single_threaded_blas()

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(
            ["logits", "features"], {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return logits, features

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from pneumo.inference.export import CAM_OUTPUT

        if CAM_OUTPUT not in {o.name for o in self.session.get_outputs()}:
            raise ModelError(f"{self.onnx_path}: this ONNX file has no class activation map")
        logits, features, maps = self.session.run(
            ["logits", "features", CAM_OUTPUT],
            {self._input: np.ascontiguousarray(batch, dtype=np.float32)},
        )
        return logits, features, maps


class TorchPredictor(Predictor):
    """torch eager in inference mode, channels_last; ``precision="bf16"`` adds CPU autocast.
    ``.model`` is the fp32 ``nn.Module`` (Grad-CAM hooks into it)."""

    backend = "torch"

    def __init__(
        self,
        model,
        metadata: ModelMetadata,
        ood_tensors: dict[str, np.ndarray] | None = None,
        *,
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
        precision: str = "fp32",
    ):
        import torch

        if precision not in ("fp32", "bf16"):
            raise ModelError(f"precision {precision!r} is not available for torch (fp32 or bf16)")
        super().__init__(
            metadata, ood_tensors, threads=threads, batch_size=batch_size, precision=precision
        )
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self.model = model.eval().to(memory_format=torch.channels_last)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            fmap = self.model.forward_features(x)
            logits = self.model.forward_head(fmap)
            features = self.model.forward_head(fmap, pre_logits=True)
        return logits.float().numpy(), features.float().numpy()

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        from pneumo.inference.export import with_features_and_cam

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            outs = with_features_and_cam(self.model)(x)
        logits, features, maps = (t.float().numpy() for t in outs)
        return logits, features, maps


def load_predictor(
    model_dir: str | Path | None = None,
    *,
    backend: str = "auto",
    threads: int | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
) -> Predictor:
    """Load a model directory (default: $PNEUMO_MODEL or the bundled model) as a Predictor.

    ``backend``: ``openvino`` and ``onnx`` run the export cached per machine (made on first
    use), ``torch`` runs the module itself, ``auto`` is OpenVINO when installed, else ONNX
    Runtime. ``precision``: fp32; bf16 (OpenVINO, or torch autocast); int8 (OpenVINO, NNCF
    static quantisation calibrated on training films); ``bf16+fp32`` and ``int8+fp32``
    (OpenVINO: the fast precision, fp32 again near a decision edge, with the accuracy guard's
    margins); ``auto`` is fp32 except on OpenVINO, where it is what the accuracy guard chose
    (``pneumo.inference.guard``). ``threads`` defaults to the usable core count;
    ``batch_size`` to ``CASCADE_BATCH_SIZE`` for a cascade, else ``BATCH_SIZE``.
    """
    backend = resolve_backend(backend)
    if precision not in SERVING_PRECISIONS:
        raise ModelError(
            f"unknown precision {precision!r}; choose one of: {', '.join(SERVING_PRECISIONS)}"
        )
    if "+" in precision and backend != "openvino":
        raise ModelError(f"the {precision} cascade runs on the OpenVINO backend")
    if batch_size is not None and not 1 <= batch_size <= 4096:
        raise ModelError(f"batch size must be in 1..4096, got {batch_size}")
    plain_batch = BATCH_SIZE if batch_size is None else batch_size  # OpenVINO: per precision
    model_dir = resolve_model_dir(model_dir)
    if backend == "openvino":
        predictor = _load_openvino(model_dir, precision, threads, batch_size)
    elif backend == "onnx":
        from pneumo.inference.export import ensure_onnx

        if precision not in ("auto", "fp32"):
            raise ModelError(
                f"{precision} runs on the OpenVINO backend (bf16 also on torch); "
                "ONNX Runtime runs fp32"
            )
        predictor = OnnxPredictor(
            ensure_onnx(model_dir),
            read_metadata(model_dir),
            read_ood_tensors(model_dir),
            threads=threads,
            batch_size=plain_batch,
        )
    else:
        if precision == "int8":
            raise ModelError("int8 runs on the OpenVINO backend: use backend='openvino'")
        from pneumo.extras import require_train
        from pneumo.models.checkpoint import load_model

        require_train("the torch backend")

        model, meta, extra = load_model(model_dir)
        ood = {k: v.float().numpy() for k, v in extra.items() if k.startswith("ood.")}
        predictor = TorchPredictor(
            model,
            meta,
            ood,
            threads=threads,
            batch_size=plain_batch,
            precision="fp32" if precision == "auto" else precision,
        )
    log.info(
        "loaded %s (%s, %s, %s)",
        model_dir,
        predictor.metadata.backbone,
        predictor.backend,
        predictor.precision,
    )
    return predictor


def model_prepared(
    model_dir: str | Path | None = None, *, backend: str = "auto", precision: str = "auto"
) -> bool:
    """Whether loading ``model_dir`` will find its per-machine files cached (no export, no
    guard run): then loading imports neither torch nor NNCF."""
    backend = resolve_backend(backend)
    model_dir = resolve_model_dir(model_dir)
    if backend == "torch":
        return True
    from pneumo.inference.export import onnx_ready

    if backend == "onnx":
        return onnx_ready(model_dir)
    from pneumo.inference.guard import guard_path
    from pneumo.inference.openvino_backend import cached_ir_path

    needed = [cached_ir_path(model_dir)]
    if precision == "auto" or "+" in precision:
        needed.append(guard_path(model_dir))
    if precision.startswith("int8"):
        needed.append(cached_ir_path(model_dir, "int8"))
    return all(path.is_file() for path in needed)


def prepare_model(
    model_dir: str | Path | None = None, *, backend: str = "auto", precision: str = "auto"
) -> None:
    """Do the one-off work of a first use on this machine now (ONNX export, OpenVINO IR, the
    accuracy guard), so worker processes started next find it cached instead of racing."""
    backend = resolve_backend(backend)
    model_dir = resolve_model_dir(model_dir)
    if backend == "torch":
        return
    from pneumo.inference.export import ensure_onnx

    ensure_onnx(model_dir)
    if backend == "openvino":
        from pneumo.inference.openvino_backend import ensure_ir

        ensure_ir(model_dir)
        if precision == "auto" or "+" in precision:
            from pneumo.inference.guard import guarded_precision

            guarded_precision(model_dir)


def _load_openvino(
    model_dir: Path, precision: str, threads: int | None, batch_size: int | None
) -> Predictor:
    from pneumo.inference.cascade import CASCADE_BATCH_SIZE, fast_precision
    from pneumo.inference.guard import guarded_precision, read_guard

    if not installed("openvino"):
        raise ModelError(
            missing_message("openvino", "the OpenVINO backend") + " (or use --backend onnx)"
        )
    if precision == "auto" or fast_precision(precision):
        chosen = guarded_precision(model_dir, threads=threads)
        precision = chosen if precision == "auto" else precision
    report = read_guard(model_dir)
    fast = fast_precision(precision)
    if batch_size is None:
        batch_size = BATCH_SIZE if fast is None else CASCADE_BATCH_SIZE
    if fast is None:
        predictor = _openvino_at(model_dir, precision, threads, batch_size)
    else:
        from pneumo.inference.cascade import CascadePredictor, Margins
        from pneumo.inference.guard import cascade_verdict

        figures = None if report is None else cascade_verdict(report, precision)
        if figures is None:
            raise ModelError(
                f"the {precision} cascade needs the accuracy guard's measured error, and the "
                "guard has not measured it here (`pneumo models --check` says why)"
            )
        predictor = CascadePredictor(
            _openvino_at(model_dir, fast, threads, batch_size),
            lambda: _openvino_at(model_dir, "fp32", threads, batch_size),
            Margins(figures.log_odds_margin, figures.ood_margin),
        )
    predictor.precision_guard = report
    return predictor


def _openvino_at(model_dir: Path, precision: str, threads: int | None, batch_size: int):
    """One OpenVINO predictor at one plain precision (int8 calibrated now if forced first)."""
    from pneumo.inference.openvino_backend import OpenVinoPredictor, cached_ir_path, ensure_ir

    meta = read_metadata(model_dir)
    xml = ensure_ir(model_dir)
    if precision == "int8":
        xml = cached_ir_path(model_dir, "int8")
        if not xml.is_file():  # forced int8 before the guard made it: calibrate now
            from pneumo.inference.quantize import ensure_int8_ir
            from pneumo.models.films import read_films

            xml = ensure_int8_ir(model_dir, read_films(model_dir).calibration)
    return OpenVinoPredictor(
        xml,
        meta,
        read_ood_tensors(model_dir),
        precision=precision,
        threads=threads,
        batch_size=batch_size,
    )
