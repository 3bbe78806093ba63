"""Feature cache for frozen-backbone training: each image's pooled backbone features, computed
once and stored on disk, keyed by backbone, weights, preprocessing and file content. Training a
head on the cache then costs milliseconds an epoch instead of a pass over the images."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from pneumo.data.dataset import make_loader
from pneumo.data.discover import ImageRecord
from pneumo.files import atomic_path
from pneumo.models.preprocess import DataConfig
from pneumo.progress import progress_bar
from pneumo.training.loops import predict_loader
from pneumo.training.runtime import autocast
from pneumo.training.transforms import image_dataset

log = logging.getLogger(__name__)


def model_key(
    backbone: str, model: torch.nn.Module, data_config: DataConfig, precision: str
) -> str:
    """Identifies the feature extractor: backbone name, a hash of its weights, preprocessing."""
    digest = hashlib.sha256(backbone.encode())
    for name, tensor in sorted(getattr(model, "module", model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
        digest.update(str(float(tensor.float().sum())).encode())
    digest.update(json.dumps(data_config.to_dict(), sort_keys=True).encode())
    digest.update(precision.encode())
    return f"{backbone}-{digest.hexdigest()[:16]}"


def content_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_features(
    model: torch.nn.Module,
    records: list[ImageRecord],
    data_config: DataConfig,
    *,
    cache_dir: Path,
    key: str,
    bf16: bool = False,
    workers: int = 2,
) -> tuple[np.ndarray, np.ndarray, list[ImageRecord]]:
    """Features (N, D) and labels (N,) of ``records``, computing only what the cache lacks.

    Unreadable images are skipped with a warning; the returned records are the ones kept.
    """
    from safetensors.numpy import load_file, save_file

    cache_file = Path(cache_dir) / f"{key}.safetensors"
    cache: dict[str, np.ndarray] = load_file(str(cache_file)) if cache_file.is_file() else {}
    keys = [content_key(r.path) for r in records]
    todo = [r for r, k in zip(records, keys, strict=True) if k not in cache]
    if todo:
        log.info(
            "extracting features of %d images (%d cached)", len(todo), len(records) - len(todo)
        )
        loader = make_loader(image_dataset(todo, data_config), batch_size=64, workers=workers)
        model = model.to(memory_format=torch.channels_last)
        with progress_bar(len(todo), "features") as advance, autocast(bf16):
            out = predict_loader(model, loader, bf16=bf16, advance=advance)
        by_path = {str(r.path): k for r, k in zip(records, keys, strict=True)}
        for path, feat in zip(out["paths"], out["features"], strict=True):
            cache[by_path[path]] = feat.astype(np.float32)
        with atomic_path(cache_file) as tmp:
            save_file(cache, str(tmp))
    kept = [(r, k) for r, k in zip(records, keys, strict=True) if k in cache]
    if len(kept) < len(records):
        log.warning("%d unreadable image(s) skipped", len(records) - len(kept))
    feats = np.stack([cache[k] for _, k in kept]) if kept else np.zeros((0, 0), np.float32)
    labels = np.asarray([r.label_index for r, _ in kept])
    return feats, labels, [r for r, _ in kept]
