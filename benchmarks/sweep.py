"""Sweep fine-tuning recipes with the project's own CLI, on a CPU or a lent GPU (--device cuda),
and gather validation and canary figures of every run and averaging variant in one table.

    python benchmarks/sweep.py --device cuda --seeds 0,1,2 --out runs/sweep
    python benchmarks/sweep.py --recipes lpft,zero --epochs 2 --max-images 400   # a quick look

Validation carved from train cannot rank recipes under the train-to-test shift (issue 8's
probes): read the table for what breaks and what it costs, and choose by principle.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    # name: extra `pneumo train` options
    "lpft": [],
    "zero": ["--head-init", "zero"],
    "random": ["--head-init", "random"],
    "lpft-wise0.5": ["--wise-alpha", "0.5"],
    "lpft-noema": ["--ema-decay", "0"],
    "lpft-trainbn": ["--train-bn"],
    "lpft-freeze2": ["--freeze-stages", "2"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="lpft,zero", help=f"of {','.join(RECIPES)}")
    parser.add_argument("--backbones", default="tf_efficientnet_lite0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--data", default=None, help="data root (default $PNEUMO_DATA)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args(argv)

    table = []
    for backbone in args.backbones.split(","):
        for recipe in args.recipes.split(","):
            for seed in args.seeds.split(","):
                run = args.out / f"{backbone}-{recipe}-s{seed}"
                cmd = [sys.executable, "-m", "pneumo", "train", "--mode", "finetune"]
                cmd += ["--backbone", backbone, "--epochs", str(args.epochs), "--seed", seed]
                cmd += ["--class-balance", "sampler", "--device", args.device]
                cmd += ["--workers", str(args.workers), "--output", str(run), *RECIPES[recipe]]
                if args.max_images:
                    cmd += ["--max-images", str(args.max_images)]
                if args.data:
                    cmd += ["--data", args.data]
                if (run / "model" / "model.json").is_file():
                    print(f"{run}: done before, kept")
                else:
                    if (run / "checkpoints" / "last.json").is_file():
                        cmd.append("--resume")
                    started = time.perf_counter()
                    subprocess.run(cmd, check=True)
                    print(f"{run}: {time.perf_counter() - started:.0f} s")
                subprocess.run([sys.executable, "-m", "pneumo", "variants", str(run)], check=True)
                for row in json.loads((run / "variants.json").read_text()):
                    table.append({"run": run.name, **row})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(table, indent=1) + "\n")
    print("| run | variant | val ROC-AUC | val bal. acc. | canary correct | canary NORMAL mean p |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['run']} | {r['variant']} | {r['val_roc_auc']:.4f} | "
            f"{r['val_balanced_accuracy']:.4f} | {r.get('canary_correct', 'n/a')} | "
            f"{r.get('canary_normal_mean_p', float('nan')):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
