"""Export a model directory to ONNX (outputs ``logits``, ``features`` and the class activation
map ``cam``, dynamic batch axis), and the graph serving runs: the one shipped in the model
directory (``model.onnx``, written by ``pneumo bundle``: serving needs no torch), else one
exported from the weights on first use into a per-machine cache (needs the ``train`` extra).

Weights are stored in fp16 and computed in fp32: each float initializer whose values fp16 holds
exactly is stored as fp16 behind a ``Cast`` to fp32, and batch norm is left for ONNX Runtime and
OpenVINO to fold into the convolutions at load time (folded at export, the products would need
fp32 to be stored exactly). The graph so computes what the fp32 export computes, at half the
size."""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

from pneumo.errors import ModelError
from pneumo.files import atomic_path
from pneumo.models.checkpoint import GRAPH_FILE, WEIGHTS_FILE, resolve_model_dir

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "features", "cam")
CAM_OUTPUT = "cam"
"""(N, classes, h, w): the head's weights applied at each cell of the last feature map, so
ONNX Runtime and OpenVINO draw heatmaps without torch (``pneumo.inference.cam``)."""
EXPORT_VERSION = "3"
"""Bumped when the exported graph changes, so stale cache entries are not reused."""
WEIGHTS_KEY = "pneumo_weights_sha256"
"""Metadata of the exported graph: the sha256 of the weights it was made from, so a graph left
beside newer weights is never served."""


def weights_digest(model_dir: str | Path) -> str:
    """sha256 of ``model.safetensors``: the cache key (weights fix the graph and the numbers).
    Hashed once per file version: a load asks for it several times (ONNX, IR, guard paths)."""
    path = (Path(model_dir) / WEIGHTS_FILE).resolve()
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_onnx_path(model_dir: str | Path) -> Path:
    """Where the exported ONNX of ``model_dir`` is cached."""
    from pneumo.cache import cache_dir

    return cache_dir() / "onnx" / f"{weights_digest(model_dir)}.v{EXPORT_VERSION}.onnx"


def export_onnx(
    model_dir: str | Path | None = None, output: str | Path | None = None, *, opset: int = 17
) -> Path:
    """Export a model to ONNX for ONNX Runtime and OpenVINO: outputs `logits`, `features` and
    the class activation map `cam`, any batch size.

    MODEL_DIR defaults to $PNEUMO_MODEL or the bundled model; the file goes to OUTPUT or to the
    per-machine cache ($PNEUMO_CACHE/onnx or ~/.cache/pneumo/onnx, keyed by the weights' sha256).
    Weights are stored in fp16 where that is exact and computed in fp32. The model metadata
    (model.json) and the weights' sha256 are embedded in the ONNX file's metadata. Needs the
    `train` extra (torch); `pneumo bundle` ships the graph in the model directory, so serving
    does not.
    """
    if not 13 <= opset <= 23:  # what torch's exporter and ONNX Runtime both support
        raise ModelError(f"--opset must be in 13..23, got {opset}")
    from pneumo.extras import require_train

    require_train("exporting a model from its weights to ONNX")
    import torch

    from pneumo.models.checkpoint import load_model

    model_dir = resolve_model_dir(model_dir)
    output = Path(output) if output is not None else cached_onnx_path(model_dir)
    model, meta, _ = load_model(model_dir)
    h, w = meta.data_config.input_size

    wrapped = with_features_and_cam(model).eval()
    example = torch.zeros(1, 3, h, w)
    check_cam_head(wrapped, h, w)
    try:
        with atomic_path(output) as tmp:
            _write_onnx(tmp, wrapped, example, meta, model_dir, opset)
    except Exception as exc:
        raise ModelError(f"{model_dir}: ONNX export failed ({exc})") from exc
    log.info("exported %s (%s) to %s", model_dir, meta.backbone, output)
    return output


def store_fp16(proto) -> int:
    """Store each fp32 initializer of ``proto`` that fp16 holds exactly as fp16 behind a Cast
    back to fp32 (the rest stay fp32): the graph computes the same numbers from half the bytes.
    Returns how many were converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            kept.append(init)
            continue
        stored = numpy_helper.from_array(half, f"{init.name}.fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # before their users: ONNX wants nodes in order
    return len(casts)


def with_features_and_cam(net):
    """The network with three outputs of one pass: the classifier logits, the pooled pre-logit
    features, and the class activation map: for timm's global-average-pooled linear head,
    ``logit_c = mean over cells of (W_c . f(cell)) + b_c``, so ``W_c . f(cell)`` is how much each
    cell argued for class c (a 1x1 convolution; Grad-CAM gives the same map for this head, up to
    scale, because its gradient is ``W_c / cells`` at every cell)."""
    import torch

    class WithFeaturesAndCam(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            head = net.get_classifier()
            self.register_buffer("cam_weight", head.weight.detach()[:, :, None, None].clone())

        def forward(self, x):
            fmap = self.net.forward_features(x)
            logits = self.net.forward_head(fmap)
            features = self.net.forward_head(fmap, pre_logits=True)
            cam = torch.nn.functional.conv2d(fmap, self.cam_weight)
            return logits, features, cam

    return WithFeaturesAndCam(net)


def check_cam_head(wrapped, h: int, w: int) -> None:
    """Raise ModelError unless the map's cell mean plus the bias gives the logits: true for a
    global-average-pooled linear head (every backbone in the registry), false for any other
    head, whose map would explain something the model does not compute."""
    import torch

    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _, cam = wrapped(x)
        bias = wrapped.net.get_classifier().bias
        rebuilt = cam.mean(dim=(2, 3)) + (0 if bias is None else bias)
    if not torch.allclose(rebuilt, logits, rtol=1e-3, atol=1e-3):
        raise ModelError(
            "the classifier head is not a global-average-pooled linear layer: no class "
            "activation map can be exported for it"
        )


def shipped_onnx(model_dir: str | Path) -> Path | None:
    """The graph shipped in ``model_dir`` (``model.onnx``) when it was made from the weights
    beside it, else None (a stale one is reported and left unused)."""
    path = Path(model_dir) / GRAPH_FILE
    if not path.is_file():
        return None
    made_from = embedded_property(path, WEIGHTS_KEY)
    if made_from != weights_digest(model_dir):
        log.warning(
            "%s was not exported from the weights beside it: not used (`pneumo bundle` or "
            "`pneumo export --output` writes it again)",
            path,
        )
        return None
    return path


def ensure_onnx(model_dir: str | Path | None = None) -> Path:
    """The fp32 graph serving runs for ``model_dir`` (other precisions are made from it by the
    OpenVINO backend): the shipped ``model.onnx``, else the cached export, exported now on first
    use (which needs the ``train`` extra)."""
    model_dir = resolve_model_dir(model_dir)
    shipped = shipped_onnx(model_dir)
    if shipped is not None:
        return shipped
    path = cached_onnx_path(model_dir)
    if not path.is_file():
        from pneumo.extras import installed, missing_message

        if not installed("torch"):
            raise ModelError(
                f"{model_dir} ships no {GRAPH_FILE} for its weights, and "
                + missing_message("train", "exporting one from them")
            )
        log.info("first use of this model on this machine: exporting to ONNX (once)")
        export_onnx(model_dir, path)
    return path


def onnx_ready(model_dir: str | Path) -> bool:
    """Whether ``ensure_onnx`` will find a graph without exporting one."""
    return shipped_onnx(model_dir) is not None or cached_onnx_path(model_dir).is_file()


def embedded_property(onnx_path: str | Path, key: str) -> str | None:
    """One metadata property of an ONNX file (None when absent)."""
    stat = Path(onnx_path).stat()
    return _properties(str(Path(onnx_path).resolve()), stat.st_size, stat.st_mtime_ns).get(key)


@lru_cache(maxsize=16)
def _properties(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX file ({exc})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def embedded_metadata(onnx_path: str | Path):
    """The ModelMetadata embedded by ``export_onnx`` (None for foreign ONNX files)."""
    value = embedded_property(onnx_path, "pneumo_model")
    if value is None:
        return None
    from pneumo.models.checkpoint import ModelMetadata

    return ModelMetadata.from_dict(json.loads(value))


def _write_onnx(tmp: Path, wrapped, example, meta, model_dir: Path, opset: int) -> None:
    """The graph of ``wrapped`` with its weights in fp16 where exact and the model's metadata."""
    import warnings

    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapped,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=opset,
            do_constant_folding=True,
            # PRESERVE on an eval-mode module: batch norm stays a node (inference mode), its
            # weights stay the stored fp16 values; EVAL would fold it into new fp32 weights
            training=torch.onnx.TrainingMode.PRESERVE,
            dynamo=False,  # the dynamo exporter needs onnxscript; this one is dependency-free
        )
    import onnx

    proto = onnx.load(str(tmp))
    store_fp16(proto)
    proto.metadata_props.add(key="pneumo_model", value=json.dumps(meta.to_dict()))
    proto.metadata_props.add(key=WEIGHTS_KEY, value=weights_digest(model_dir))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
