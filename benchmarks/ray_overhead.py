"""What Ray costs on one machine: the local `pneumo predict` path against `predict_with_ray`
(with a Ray started for each run, and with one already running), median wall time of the same
films over several runs, and whether both wrote the same bytes.

    python benchmarks/ray_overhead.py ../shared/data/chest_xray --films 200 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the chest_xray folder (val and train are read)")
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import ray

    from pneumo.inference.predict import predict_files
    from pneumo.inference.ray_predict import predict_with_ray

    films = sorted(args.data.glob("val/*/*.jpeg")) + sorted(args.data.glob("train/*/*.jpeg"))[::25]
    films = [str(p) for p in films[: args.films]]
    out = Path(tempfile.mkdtemp(prefix="ray-overhead-"))

    def timed(run) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    local, on_ray = out / "local.csv", out / "ray.csv"
    runs: dict[str, list[float]] = {"local": [], "ray, start-up included": [], "ray, running": []}
    for _ in range(args.runs):
        runs["local"].append(timed(lambda: predict_files(films, output=local, progress=False)))
        runs["ray, start-up included"].append(
            timed(lambda: predict_with_ray(films, output=on_ray, progress=False))
        )
    ray.init(include_dashboard=False, logging_level="WARNING")
    for _ in range(args.runs):
        runs["ray, running"].append(
            timed(lambda: predict_with_ray(films, output=on_ray, progress=False))
        )
    same = local.read_bytes() == on_ray.read_bytes()
    base = statistics.median(runs["local"])
    print(f"{len(films)} films, median of {args.runs} runs; same output bytes: {same}")
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        print(
            f"{name:24s} {median:6.1f} s  {len(films) / median:6.1f} films/s  "
            f"x{median / base:.2f} of local  (runs {[round(s, 1) for s in seconds]})"
        )


if __name__ == "__main__":
    main()
