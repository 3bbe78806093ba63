"""Sweep fine-tuning recipes with the project's own CLI, on a CPU or a lent GPU (--device cuda),
and gather validation and canary figures of every run and averaging variant in one table.

    python benchmarks/sweep.py --device cuda --seeds 0,1,2 --out runs/sweep
    python benchmarks/sweep.py --recipes zero-trainbn,lpft --epochs 2 --max-images 400   # a quick look

Validation carved from train cannot rank recipes under the train-to-test shift (issue 8's
probes, issue 17's held-out measurements): read the table for what breaks and what it costs;
recipes are ranked on held-out films measured outside the project.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    # name: extra `pneumo train` options (spelled out, so a change of defaults keeps names true)
    "zero-trainbn": ["--head-init", "zero", "--train-bn"],  # the default since issue 17
    "lpft": ["--head-init", "probe", "--freeze-bn"],  # the default before it
    "lpft-trainbn": ["--head-init", "probe", "--train-bn"],
    "zero-freezebn": ["--head-init", "zero", "--freeze-bn"],
    "random": ["--head-init", "random", "--train-bn"],
    "zero-sampler": ["--head-init", "zero", "--train-bn", "--class-balance", "sampler"],
    "zero-wise0.5": ["--head-init", "zero", "--train-bn", "--wise-alpha", "0.5"],
    "zero-noema": ["--head-init", "zero", "--train-bn", "--ema-decay", "0"],
    "zero-freeze2": ["--head-init", "zero", "--train-bn", "--freeze-stages", "2"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="zero-trainbn,lpft", help=f"of {','.join(RECIPES)}")
    parser.add_argument("--backbones", default="tf_efficientnet_lite0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=8)
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
                cmd += ["--device", args.device]
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
