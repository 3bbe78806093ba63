"""Issue 9's figures in one run: what the network alone does, what `pneumo predict` does end to
end, and what `pneumo serve` does, each as a median of several runs or as a ratio measured in
the same run (the machine may be shared: read ratios first).

    python benchmarks/speed.py [--runs 5] [--seconds 30] [--only network,pipeline,api,precision]

precision (issue 20): shipped `pneumo predict` (precision auto: the accuracy guard's bf16+fp32
cascade where it measured one faster) against `--precision fp32` on the same films, interleaved,
with the decisions (class, uncertain, ood) compared film by film.

Films: 624 from the *train* folder (every 8th; the test split is never touched) and the full-size
originals (PNEUMO_ORIGINALS). Results: benchmarks/results/speed.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from load import free_port, load_test, peak_rss_mib, percentile_ms

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ORIGINALS = Path(os.environ.get("PNEUMO_ORIGINALS", ROOT.parent / "shared/data/originals"))
DATA = Path(os.environ.get("PNEUMO_DATA", ROOT.parent / "shared/data/chest_xray"))
PNEUMO = [sys.executable, "-m", "pneumo"]
EAGER_SCRIPT = ROOT / "benchmarks" / "torch_eager_script.py"
FILMS = "624 films (224x224)"


def films_624(workdir: Path) -> Path:
    """A CSV list of 624 224x224 films from the train folder (every 8th, sorted)."""
    files = sorted((DATA / "train").glob("*/*.jpeg"))[::8][:624]
    if len(files) < 624:
        raise SystemExit(f"need 624 training films under {DATA}/train, found {len(files)}")
    path = workdir / "films624.csv"
    path.write_text("path\n" + "\n".join(str(f) for f in files) + "\n")
    return path


def run_peak(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a command. The peak comes from GNU time, which forks the
    command from its own small process: a child forked from this benchmark would count this
    process's pages in its high-water mark until it execs."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    peak = next(line for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return wall, int(peak.split()[1]) / 1024


# --- the network alone ----------------------------------------------------------------------


def bench_network(runs: int) -> list[dict]:
    """Forward passes on random input, engines interleaved round by round, medians."""
    from pneumo.inference.engine import load_predictor
    from pneumo.inference.openvino_backend import cached_ir_path
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    engines = {
        "ONNX Runtime fp32": ("onnx", "fp32"),
        "OpenVINO fp32": ("openvino", "fp32"),
        "OpenVINO bf16 (forced)": ("openvino", "bf16"),
        "torch eager fp32": ("torch", "fp32"),
    }
    if cached_ir_path(BUNDLED_MODEL_DIR, "int8").is_file():
        engines["OpenVINO int8 (forced)"] = ("openvino", "int8")
    predictors = {k: load_predictor(backend=b, precision=p) for k, (b, p) in engines.items()}
    h, w = next(iter(predictors.values())).metadata.data_config.input_size
    x = np.random.default_rng(0).normal(0, 1, (64, 3, h, w)).astype(np.float32)
    rows = []
    for batch in (1, 8, 32):
        rates: dict[str, list[float]] = {k: [] for k in predictors}
        for p in predictors.values():
            p.forward(x[:batch])  # warm-up
        for _ in range(runs):
            for name, p in predictors.items():
                start = time.perf_counter()
                for s in range(0, 64, batch):
                    p.forward(x[s : s + batch])
                rates[name].append(64 / (time.perf_counter() - start))
        base = float(np.median(rates["ONNX Runtime fp32"]))
        for name, r in rates.items():
            rows.append(
                {
                    "engine": name,
                    "batch": batch,
                    "img_s": round(float(np.median(r)), 1),
                    "vs_onnxruntime": round(float(np.median(r)) / base, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


# --- the pipeline end to end ----------------------------------------------------------------


def bench_pipeline(runs: int, workdir: Path) -> list[dict]:
    """`pneumo predict` end to end (start-up included, cache warm), interleaved with the plain
    torch-eager script on the originals; medians and a same-run ratio."""
    jobs = {FILMS: str(films_624(workdir))}
    if ORIGINALS.is_dir():
        jobs["80 full-size originals"] = str(ORIGINALS)
    out = str(workdir / "out.csv")
    run_peak([*PNEUMO, "predict", *jobs.values(), "-o", out, "--no-progress"])  # warm the cache
    # the same pipeline called from Python: start-up without whatever the CLI imports
    library = [
        sys.executable,
        "-c",
        "import sys; from pneumo.inference.predict import predict_files; "
        "predict_files([sys.argv[1]], output=sys.argv[2], progress=False)",
    ]
    times: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        for name, inputs in jobs.items():
            times.setdefault(name, []).append(
                run_peak([*PNEUMO, "predict", inputs, "-o", out, "--no-progress"])
            )
        times.setdefault("library", []).append(run_peak([*library, jobs[FILMS], out]))
        times.setdefault("onnx", []).append(
            run_peak(
                [*PNEUMO, "predict", jobs[FILMS], "-o", out, "--no-progress", "--backend", "onnx"]
            )
        )
        if ORIGINALS.is_dir():
            times.setdefault("eager", []).append(
                run_peak([sys.executable, str(EAGER_SCRIPT), str(ORIGINALS)])
            )
    rows = []
    jobs[FILMS + ", predict_files() from Python"] = jobs[FILMS]
    times[FILMS + ", predict_files() from Python"] = times.pop("library")
    jobs[FILMS + ", --backend onnx (before this work)"] = jobs[FILMS]
    times[FILMS + ", --backend onnx (before this work)"] = times.pop("onnx")
    for name, inputs in jobs.items():
        n = len(Path(inputs).read_text().splitlines()) - 1 if inputs.endswith(".csv") else 80
        wall = float(np.median([t for t, _ in times[name]]))
        row = {
            "inputs": name,
            "runs": runs,
            "median_s": round(wall, 2),
            "img_s": round(n / wall, 1),
            "peak_rss_mib": round(max(m for _, m in times[name])),
        }
        if "onnx" in name:
            ratios = [a / b for (a, _), (b, _) in zip(times[name], times[FILMS], strict=True)]
            row["default_is_faster_by"] = round(float(np.median(ratios)), 2)
        if name.startswith("80") and "eager" in times:
            ratios = [e / p for (p, _), (e, _) in zip(times[name], times["eager"], strict=True)]
            row["torch_eager_median_s"] = round(float(np.median([t for t, _ in times["eager"]])), 2)
            row["speedup_vs_torch_eager"] = round(float(np.median(ratios)), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# --- shipped precision against fp32 ------------------------------------------------------------


def _decisions(path: Path) -> list[tuple[str, str, str, str]]:
    import csv

    with open(path, newline="") as f:
        return [(r["path"], r["class"], r["uncertain"], r["ood"]) for r in csv.DictReader(f)]


def bench_precision(runs: int, workdir: Path) -> dict:
    """Shipped `pneumo predict` vs `--precision fp32` on the 624 films (and the shipped precision
    at `--batch-size 8`, the plain precisions' default, smaller than the cascade's): median wall
    times and peak RSS, the same-run ratios, and how many films' decisions differ (the cascade
    promises none)."""
    from pneumo.inference.guard import read_guard
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    films = str(films_624(workdir))
    flags = {"shipped": [], "fp32": ["--precision", "fp32"], "batch8": ["--batch-size", "8"]}
    outs = {name: workdir / f"{name}.csv" for name in flags}

    def cmd(name: str) -> list[str]:
        return [*PNEUMO, "predict", films, "-o", str(outs[name]), "--no-progress", *flags[name]]

    for name in outs:  # first use: export, IR and the accuracy guard, outside the timing
        run_peak(cmd(name))
    times: dict[str, list[float]] = {k: [] for k in outs}
    peaks: dict[str, list[float]] = {k: [] for k in outs}
    for _ in range(runs):
        for name in outs:
            seconds, peak = run_peak(cmd(name))
            times[name].append(seconds)
            peaks[name].append(peak)
    report = read_guard(BUNDLED_MODEL_DIR)
    reference = _decisions(outs["fp32"])

    def rate_vs_fp32(name: str) -> float:
        ratios = [b / a for a, b in zip(times[name], times["fp32"], strict=True)]
        return round(float(np.median(ratios)), 2)

    def changed(name: str) -> int:
        return sum(a != b for a, b in zip(_decisions(outs[name]), reference, strict=True))

    cascade = None
    if report is not None and "+" in report.chosen:
        c = report.verdicts[report.chosen.split("+")[0]].cascade
        cascade = {"rerun_share": round(c.rerun_share, 3), "log_odds_margin": c.log_odds_margin}
    row = {
        "films": FILMS,
        "runs": runs,
        "shipped_precision": None if report is None else report.chosen,
        "guard_cascade": cascade,
    }
    for name in outs:
        row[f"{name}_median_s"] = round(float(np.median(times[name])), 2)
        row[f"{name}_peak_rss_mib"] = round(float(np.median(peaks[name])))
        if name != "fp32":
            row[f"{name}_vs_fp32_rate"] = rate_vs_fp32(name)
            row[f"{name}_decisions_changed"] = changed(name)
    print(json.dumps(row), flush=True)
    return row


# --- the API ----------------------------------------------------------------------------------


def bench_api(seconds: float) -> list[dict]:
    import httpx

    files = sorted(ORIGINALS.rglob("*.jpeg")) if ORIGINALS.is_dir() else []
    if not files:
        print("no originals: API benchmark skipped")
        return []
    payloads = [(f.name, f.read_bytes()) for f in files]
    port, key = free_port(), "bench-" + "k" * 20
    env = {**os.environ, "PNEUMO_API_KEY": key}
    proc = subprocess.Popen(
        [*PNEUMO, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(f"{base}/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("pneumo serve did not become ready")
            time.sleep(0.3)
        answer = httpx.get(f"{base}/v1/model", headers={"X-API-Key": key}, timeout=30)
        answer.raise_for_status()
        meta = answer.json()
        engine = f"{meta['backend']} {meta['precision']}"
        # heatmaps off and on, interleaved request by request so both see the same machine
        variants = {"heatmaps off": "", "heatmaps on": "?heatmap=true"}
        lat: dict[str, list[float]] = {v: [] for v in variants}
        with httpx.Client(headers={"X-API-Key": key}, timeout=60) as c:  # one keep-alive client
            for i in range(200):
                name, data = payloads[i % len(payloads)]
                for variant, query in variants.items():
                    t = time.perf_counter()
                    r = c.post(
                        f"{base}/v1/predict{query}", files=[("files", (name, data, "image/jpeg"))]
                    )
                    lat[variant].append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
        for variant in variants:
            rows.append(
                {
                    "test": f"1 keep-alive client, 200 requests, {variant}",
                    "engine": engine,
                    "p50_ms": percentile_ms(lat[variant], 50),
                    "p95_ms": percentile_ms(lat[variant], 95),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        for variant, query in variants.items():
            row = load_test(f"{base}/v1/predict{query}", payloads, 32, seconds, key)
            row = {
                "test": f"32 concurrent clients, {seconds:.0f} s, {variant}",
                "engine": engine,
                **row,
            }
            row["server_peak_rss_mib"] = round(peak_rss_mib(proc.pid))
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def markdown(res: dict) -> str:
    lines = [f"Run {res['when']} on {res['machine']} (load average at start {res['load']})."]
    if res.get("network"):
        lines += ["", "| engine | batch | img/s (median) | vs ONNX Runtime |", "|---|---|---|---|"]
        lines += [
            f"| {r['engine']} | {r['batch']} | {r['img_s']} | {r['vs_onnxruntime']}x |"
            for r in res["network"]
        ]
    if res.get("pipeline"):
        lines += [
            "",
            "| `pneumo predict` on | median s (start-up incl.) | img/s | peak RSS MiB | same-run ratio |",
            "|---|---|---|---|---|",
        ]
        for r in res["pipeline"]:
            ratio = f"{r['speedup_vs_torch_eager']}x" if "speedup_vs_torch_eager" in r else ""
            if "default_is_faster_by" in r:
                ratio = f"default {r['default_is_faster_by']}x faster"
            lines.append(
                f"| {r['inputs']} | {r['median_s']} | {r['img_s']} | {r['peak_rss_mib']} | {ratio} |"
            )
    if res.get("api"):
        lines += ["", "| API test | engine | req/s | p50 ms | p95 ms | errors | peak RSS MiB |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for r in res["api"]:
            lines.append(
                f"| {r['test']} | {r['engine']} | {r.get('req_s', '')} | {r['p50_ms']} | "
                f"{r['p95_ms']} | {r.get('errors', '')} | {r.get('server_peak_rss_mib', '')} |"
            )
    if res.get("precision"):
        r = res["precision"]
        lines += [
            "",
            "| `pneumo predict`, 624 films | median s | same-run rate vs fp32 | decisions changed "
            "| peak RSS MiB |",
            "|---|---|---|---|---|",
            f"| shipped ({r['shipped_precision']}) | {r['shipped_median_s']} | "
            f"{r['shipped_vs_fp32_rate']}x | {r['shipped_decisions_changed']} | "
            f"{r['shipped_peak_rss_mib']} |",
            f"| shipped, --batch-size 8 | {r['batch8_median_s']} | {r['batch8_vs_fp32_rate']}x | "
            f"{r['batch8_decisions_changed']} | {r['batch8_peak_rss_mib']} |",
            f"| --precision fp32 | {r['fp32_median_s']} | 1x | - | {r['fp32_peak_rss_mib']} |",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", default="network,pipeline,api,precision")
    args = parser.parse_args()
    only = set(args.only.split(","))
    res: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}",
        "load": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "network" in only:
            res["network"] = bench_network(args.runs)
        if "pipeline" in only:
            res["pipeline"] = bench_pipeline(args.runs, Path(tmp))
        if "api" in only:
            res["api"] = bench_api(args.seconds)
        if "precision" in only:
            res["precision"] = bench_precision(args.runs, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(res, indent=1) + "\n")
    table = markdown(res)
    (RESULTS / "speed.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
