"""Training benchmarks (not a test): wall time of `pneumo train --mode frozen` on the shared
train split (cold and warm feature cache), feature-extraction images/s, one fine-tune epoch, and
the seed's recipe (frozen backbone re-run every epoch, 3 epochs) against cached-feature training
on the same backbone and images.

    python benchmarks/training.py [--backbone tf_efficientnet_lite0] [--seed-images 1000]
                                  [--finetune-images 4430] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PNEUMO_DATA", ROOT.parent / "shared/data/chest_xray"))
PNEUMO = [sys.executable, "-m", "pneumo"]


def timed_cli(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(PNEUMO + args, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def frozen_cli(backbone: str, work: Path) -> dict:
    """End to end: extraction, head, calibration, report; then again with the cache warm."""
    env = {**os.environ, "PNEUMO_CACHE": str(work / "cache")}
    args = ["train", "--mode", "frozen", "--backbone", backbone, "--data", str(DATA)]
    cold = timed_cli(args + ["--output", str(work / "frozen-cold")], env)
    warm = timed_cli(args + ["--output", str(work / "frozen-warm")], env)
    return {"frozen_train_cold_s": round(cold, 1), "frozen_train_warm_s": round(warm, 1)}


def seed_vs_cached(backbone: str, n_images: int, work: Path) -> dict:
    """The seed re-ran the frozen backbone over every image in every epoch; pneumo extracts
    once and trains the head on the cache. Same backbone, images, epochs (3) and head."""
    import torch

    from pneumo.data.dataset import make_loader
    from pneumo.models.registry import create_model, data_config
    from pneumo.training.config import TrainConfig
    from pneumo.training.features import cached_features, model_key
    from pneumo.training.head import train_head
    from pneumo.training.loops import class_weights, predict_loader
    from pneumo.training.run_records import training_records
    from pneumo.training.transforms import image_dataset

    cfg = TrainConfig(
        backbone=backbone,
        data=DATA,
        epochs=3,
        max_images=n_images,
        output=work / "unused",
        precision="fp32",
    )
    train, val = training_records(cfg)
    val = val[: max(100, n_images // 5)]
    model = create_model(backbone).eval()
    dcfg = data_config(model)

    start = time.perf_counter()  # the seed's recipe
    head = torch.nn.Linear(model.num_features, 2)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    weights = class_weights([r.label_index for r in train])
    loader = make_loader(image_dataset(train, dcfg), batch_size=32, shuffle=True, workers=2)
    val_loader = make_loader(image_dataset(val, dcfg), batch_size=64, workers=2)
    for _ in range(cfg.epochs):
        for batch in loader:
            with torch.no_grad():
                feats = model.forward_head(model.forward_features(batch["image"]), pre_logits=True)
            loss = torch.nn.functional.cross_entropy(head(feats), batch["label"], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
        predict_loader(model, val_loader)
    seed_s = time.perf_counter() - start

    start = time.perf_counter()  # pneumo: extract once (fp32, same as the seed), then the head
    key = model_key(backbone, model, dcfg, "fp32")
    kw = dict(cache_dir=work / "seed-cache", key=key, bf16=False, workers=2)
    tx, ty, _ = cached_features(model, train, dcfg, **kw)
    vx, vy, _ = cached_features(model, val, dcfg, **kw)
    extract_s = time.perf_counter() - start
    head_cfg = TrainConfig(backbone=backbone, data=DATA, epochs=3, output=work / "unused")
    history = train_head(head_cfg, model.get_classifier(), tx, ty, vx, vy)
    cached_s = time.perf_counter() - start
    return {
        "seed_recipe_images": len(train) + len(val),
        "seed_recipe_3_epochs_s": round(seed_s, 1),
        "cached_features_3_epochs_s": round(cached_s, 1),
        "cached_head_epoch_ms": round(1000 * sum(h["seconds"] for h in history) / len(history), 1),
        "feature_extraction_img_per_s_fp32": round((len(train) + len(val)) / extract_s, 1),
        "speedup_cached_vs_seed": round(seed_s / cached_s, 2),
    }


def finetune_epoch(backbone: str, n_images: int, work: Path) -> dict:
    env = {**os.environ, "PNEUMO_CACHE": str(work / "cache")}
    out = work / "finetune"
    seconds = timed_cli(
        [
            "train",
            "--mode",
            "finetune",
            "--backbone",
            backbone,
            "--data",
            str(DATA),
            "--epochs",
            "1",
            "--max-images",
            str(n_images),
            "--output",
            str(out),
        ],
        env,
    )
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return {
        "finetune_images": config["n_train"],
        "finetune_epoch_s": history[0]["seconds"],
        "finetune_train_img_per_s": round(config["n_train"] / history[0]["seconds"], 1),
        "finetune_precision": config["resolved_precision"],
        "finetune_command_total_s": round(seconds, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--seed-images", type=int, default=1000)
    ap.add_argument("--finetune-images", type=int, default=4430)
    ap.add_argument("--skip", default="", help="comma list of: frozen,seed,finetune")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    result = {"backbone": args.backbone, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "frozen" not in skip:
            result.update(frozen_cli(args.backbone, work))
            print(f"frozen pipeline: {result}", file=sys.stderr)
        if "seed" not in skip:
            result.update(seed_vs_cached(args.backbone, args.seed_images, work))
            print(f"seed vs cached: {result}", file=sys.stderr)
        if "finetune" not in skip:
            result.update(finetune_epoch(args.backbone, args.finetune_images, work))
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
