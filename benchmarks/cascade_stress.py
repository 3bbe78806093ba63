"""How far bf16 (with its fp32 head) moves the bundled model's log-odds on stressed copies of the
validation films, against the cascade's margin: the guard measures the error on the films as
they are; this checks that films pushed off that distribution do not move further than the
margin allows near a decision edge.

    python benchmarks/cascade_stress.py [--films 786]

Needs the validation films (PNEUMO_DATA) and the accuracy guard's report (any `pneumo predict`
with the default precision makes it). Prints one row per stress: the largest change of all
films, of the films within 1.0 log-odds of an edge, and the decisions the cascade would change.
"""

from __future__ import annotations

import argparse

import numpy as np


def stresses(rng: np.random.Generator) -> dict:
    """Input-space changes of a prepared film (values in [-1, 1])."""

    def gamma(g: float):
        return lambda x: ((x + 1) / 2) ** g * 2 - 1

    return {
        "as they are": lambda x: x,
        "Gaussian noise 0.05": lambda x: x + rng.normal(0, 0.05, x.shape),
        "gamma 0.7": gamma(0.7),
        "gamma 1.4": gamma(1.4),
        "contrast 0.6": lambda x: x * 0.6,
    }


def main() -> None:
    from pneumo.inference.cascade import decision_edges, log_odds, near_edges, replay
    from pneumo.inference.engine import load_predictor
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR
    from pneumo.models.films import read_films

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=786)
    args = parser.parse_args()
    records = read_films(BUNDLED_MODEL_DIR).validation[: args.films]
    cascade = load_predictor(BUNDLED_MODEL_DIR, backend="openvino", precision="bf16+fp32")
    fast, exact, meta = cascade.fast, cascade.exact, cascade.metadata
    prepared = [fast.pipeline.prepare(r.path, str(r.path)) for r in records]
    films = np.stack([f.array for f in prepared if f.error is None])
    edges = decision_edges(meta)
    print(f"{len(films)} validation films; cascade margin {cascade.margins.log_odds:.3f} log-odds")
    print("| stress | largest change | within 1.0 of an edge | re-run | decisions changed |")
    print("|---|---|---|---|---|")
    for name, stress in stresses(np.random.default_rng(0)).items():
        x = np.clip(stress(films), -1, 1).astype(np.float32)
        out32 = [exact.forward(x[i : i + 8]) for i in range(0, len(x), 8)]
        out16 = [fast.forward(x[i : i + 8]) for i in range(0, len(x), 8)]
        (l32, f32), (l16, f16) = (
            tuple(map(np.concatenate, zip(*o, strict=True))) for o in (out32, out16)
        )
        z32, z16 = log_odds(l32, meta.temperature), log_odds(l16, meta.temperature)
        change = np.abs(z16 - z32)
        near = near_edges(z32, edges, 1.0)
        s32, s16 = exact.ood_score(f32), exact.ood_score(f16)
        again, changed = replay(l32, l16, s32, s16, meta, cascade.margins)
        print(
            f"| {name} | {change.max():.3f} | {change[near].max() if near.any() else 0:.3f} "
            f"({near.sum()} films) | {again.mean():.1%} | {int(changed.sum())} |"
        )


if __name__ == "__main__":
    main()
