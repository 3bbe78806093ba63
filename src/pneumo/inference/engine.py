"""The two backends behind ``Predictor``: ONNX Runtime (default; faster than torch eager on CPU,
see ``benchmarks/engine_medians.py`` for this machine's figures) and torch (for Grad-CAM and bf16
autocast on CPUs with AMX). Build one with
``load_predictor`` once per process and share it: both are thread-safe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.errors import ModelError
from pneumo.inference.base import Predictor, default_threads
from pneumo.models.checkpoint import WEIGHTS_FILE, read_metadata, resolve_model_dir

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "torch")
PRECISIONS = ("fp32", "bf16", "int8")


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

    def __init__(
        self,
        onnx_path: str | Path,
        metadata: ModelMetadata,
        ood_tensors: dict[str, np.ndarray] | None = None,
        *,
        threads: int | None = None,
        batch_size: int = 32,
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
        self.metadata = metadata
        self.ood_tensors = ood_tensors or {}
        self.batch_size = batch_size
        self.threads = threads or default_threads()
        self.decode_workers = self.threads
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

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(
            ["logits", "features"], {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return logits, features


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
        batch_size: int = 32,
        precision: str = "fp32",
    ):
        import torch

        if precision not in ("fp32", "bf16"):
            raise ModelError(f"precision {precision!r} is not available for torch (fp32 or bf16)")
        self.metadata = metadata
        self.ood_tensors = ood_tensors or {}
        self.batch_size = batch_size
        self.precision = precision
        self.threads = threads or default_threads()
        self.decode_workers = self.threads
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


def load_predictor(
    model_dir: str | Path | None = None,
    *,
    backend: str = "onnx",
    threads: int | None = None,
    precision: str = "fp32",
    batch_size: int = 32,
) -> Predictor:
    """Load a model directory (default: $PNEUMO_MODEL or the bundled model) as a Predictor.

    ``backend="onnx"`` runs the ONNX export cached per machine (exported on first use);
    ``"torch"`` runs the module itself. ``precision``: fp32, int8 (ONNX, dynamic quantisation)
    or bf16 (torch autocast). ``threads`` defaults to the usable core count.
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    model_dir = resolve_model_dir(model_dir)
    if backend == "onnx":
        from pneumo.inference.export import ensure_onnx

        if precision == "bf16":
            raise ModelError("bf16 runs on the torch backend: use backend='torch'")
        meta = read_metadata(model_dir)
        path = ensure_onnx(model_dir, precision)
        predictor: Predictor = OnnxPredictor(
            path, meta, read_ood_tensors(model_dir), threads=threads, batch_size=batch_size
        )
    else:
        if precision == "int8":
            raise ModelError("int8 runs on the ONNX backend: use backend='onnx'")
        from pneumo.models.checkpoint import load_model

        model, meta, extra = load_model(model_dir)
        ood = {k: v.float().numpy() for k, v in extra.items() if k.startswith("ood.")}
        predictor = TorchPredictor(
            model, meta, ood, threads=threads, batch_size=batch_size, precision=precision
        )
    log.info("loaded %s (%s, %s, %s)", model_dir, meta.backbone, backend, precision)
    return predictor
