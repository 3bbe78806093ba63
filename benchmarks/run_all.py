"""All inference benchmarks in one run (`make bench`); results go to benchmarks/results/ as JSON
plus a Markdown table.

    python benchmarks/run_all.py [--quick] [--only engine,latency,variants,memory,api]

- engine: ONNX Runtime vs torch eager fp32 vs torch bf16, images/s at batch 1 and 32 from
  decoded tensors, for the bundled model (random tf_efficientnet_lite0 when it is missing),
  densenet121 and resnet50 (random weights: timing only);
- latency: p50/p95 from a full-size JPEG on disk (PNEUMO_ORIGINALS) to a probability;
- variants: ONNX graph optimisation and thread settings, OpenVINO fp32/bf16/int8 and torch
  bf16, with how much their predictions move on real images (PNEUMO_DATA);
- memory: peak RSS of `pneumo predict` and `pneumo serve`, with and without jemalloc (jemalloc
  rows run ONNX Runtime: OpenVINO aborts with jemalloc preloaded);

Issue 9's figures (network, pipeline, API as medians and same-run ratios) are in speed.py.
- api: `pneumo serve` under 32 concurrent clients from this (second) process on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from load import free_port, load_test, peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
ORIGINALS = Path(os.environ.get("PNEUMO_ORIGINALS", ROOT.parent / "shared/data/originals"))
DATA = Path(os.environ.get("PNEUMO_DATA", ROOT.parent / "shared/data/chest_xray"))
PNEUMO = [sys.executable, "-c", "import sys; from pneumo.cli import main; sys.exit(main())"]


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def random_model(name: str, workdir: Path) -> Path:
    """A model directory with random weights (timing only), saved like a trained one."""
    from pneumo.models.checkpoint import ModelMetadata, save_model
    from pneumo.models.registry import create_model, data_config

    out = workdir / name
    if not (out / "model.json").is_file():
        model = create_model(name, pretrained=False).eval()
        save_model(out, model, ModelMetadata(backbone=name, data_config=data_config(model)))
    return out


def bundled_or_random(workdir: Path) -> tuple[str, Path]:
    from pneumo.models.checkpoint import BUNDLED_MODEL_DIR

    if (BUNDLED_MODEL_DIR / "model.json").is_file():
        return "bundled (tf_efficientnet_lite0)", BUNDLED_MODEL_DIR
    return "tf_efficientnet_lite0 (random; bundled model missing)", random_model(
        "tf_efficientnet_lite0", workdir
    )


def throughput(predictor, batch: int, seconds: float) -> float:
    h, w = predictor.metadata.data_config.input_size
    x = np.random.default_rng(0).normal(0, 1, (batch, 3, h, w)).astype(np.float32)
    predictor.forward(x)  # warm-up (allocations, oneDNN primitive cache)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 2:
        predictor.forward(x)
        n += 1
    return n * batch / (time.perf_counter() - start)


def file_latency(predictor, files: list[Path], repeats: int) -> dict:
    predictor.predict_sources([files[0]])
    times = []
    for i in range(repeats):
        f = files[i % len(files)]
        t = time.perf_counter()
        (p,) = predictor.predict_sources([f])
        times.append(time.perf_counter() - t)
        assert p.error is None, p.error
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "n": repeats}


def bench_engine(models, quick: bool, files: list[Path]) -> list[dict]:
    from pneumo.inference.engine import load_predictor

    secs = 2.0 if quick else 6.0
    rows = []
    for label, mdir in models:
        for backend, precision in (("onnx", "fp32"), ("torch", "fp32"), ("torch", "bf16")):
            p = load_predictor(mdir, backend=backend, precision=precision)
            row = {
                "model": label,
                "engine": f"{backend} {precision}",
                "b1_img_s": throughput(p, 1, secs),
                "b32_img_s": throughput(p, 32, secs),
            }
            if files:
                row.update(file_latency(p, files, 20 if quick else 80))
            rows.append(row)
            print(json.dumps(row), flush=True)
            del p
        base = next(r for r in rows if r["model"] == label and r["engine"] == "torch fp32")
        onnx = next(r for r in rows if r["model"] == label and r["engine"] == "onnx fp32")
        onnx["speedup_b32_vs_torch"] = onnx["b32_img_s"] / base["b32_img_s"]
        onnx["speedup_b1_vs_torch"] = onnx["b1_img_s"] / base["b1_img_s"]
    return rows


def real_sample(n: int) -> list[tuple[Path, int]]:
    items = []
    for label, cls in ((0, "NORMAL"), (1, "PNEUMONIA")):
        folder = DATA / "val" / cls
        files = sorted(folder.glob("*.jpeg")) if folder.is_dir() else []
        more = sorted((DATA / "train" / cls).glob("*.jpeg")) if (DATA / "train").is_dir() else []
        random.Random(0).shuffle(more)
        items += [(f, label) for f in (files + more)[: n // 2]]
    return items


def bench_variants(model: Path, quick: bool) -> dict:
    """ORT settings and int8/bf16, each against ONNX fp32 on the same images."""
    from pneumo.inference.engine import OnnxPredictor, load_predictor, read_ood_tensors
    from pneumo.inference.export import ensure_onnx
    from pneumo.models.checkpoint import read_metadata

    secs = 2.0 if quick else 5.0
    meta, ood, path = read_metadata(model), read_ood_tensors(model), ensure_onnx(model)
    out: dict = {"ort_settings": []}
    for opt in ("none", "basic", "all"):
        for threads in (1, 2):
            p = OnnxPredictor(path, meta, ood, threads=threads, graph_optimization=opt)
            out["ort_settings"].append(
                {
                    "graph_optimization": opt,
                    "threads": threads,
                    "b1_img_s": throughput(p, 1, secs),
                    "b32_img_s": throughput(p, 32, secs),
                }
            )
            print(json.dumps(out["ort_settings"][-1]), flush=True)
    sample = real_sample(100 if quick else 400)
    if not sample:
        return out
    paths, labels = [s[0] for s in sample], np.array([s[1] for s in sample])
    ref = load_predictor(model, backend="onnx")
    ref_p = np.array([p.model_probability for p in ref.predict_sources(paths)])
    out["variants"] = []
    for backend, precision in (
        ("onnx", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
        ("torch", "bf16"),
    ):
        p = load_predictor(model, backend=backend, precision=precision)
        probs = np.array([x.model_probability for x in p.predict_sources(paths)])
        thr = p.metadata.threshold
        row = {
            "variant": f"{backend} {precision}",
            "images": len(paths),
            "b32_img_s": throughput(p, 32, secs),
            "max_abs_dp": float(np.abs(probs - ref_p).max()),
            "label_flips": int(((probs >= thr) != (ref_p >= thr)).sum()),
            "accuracy": float(((probs >= thr) == labels).mean()),
        }
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    return out


def _wait_rss(proc: subprocess.Popen) -> float:
    """Peak RSS (MiB) of a finished child, from wait4's rusage (kB on Linux)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024


def bench_memory(model: Path, quick: bool) -> list[dict]:
    rows = []
    inputs = str(ORIGINALS) if ORIGINALS.is_dir() else str(DATA / "val")
    for jemalloc in (False, True):
        if jemalloc and not Path(JEMALLOC).is_file():
            continue
        env = dict(os.environ, PNEUMO_JEMALLOC="1" if jemalloc else "0")
        env.pop("LD_PRELOAD", None)
        if jemalloc:
            env["LD_PRELOAD"] = JEMALLOC
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            proc = subprocess.Popen(
                [
                    *PNEUMO,
                    "predict",
                    inputs,
                    "--model",
                    str(model),
                    "-o",
                    f"{tmp}/out.csv",
                    "--no-progress",
                    *(["--backend", "onnx"] if jemalloc else []),
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            rss = _wait_rss(proc)
            rows.append(
                {
                    "process": "predict",
                    "jemalloc": jemalloc,
                    "peak_rss_mib": rss,
                    "wall_s": time.perf_counter() - t,
                    "inputs": inputs,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_api(model: Path, quick: bool) -> list[dict]:
    import httpx

    seconds = 15.0 if quick else 60.0
    sets = {}
    if ORIGINALS.is_dir():
        sets["full-size originals"] = [
            (f.name, f.read_bytes()) for f in sorted(ORIGINALS.rglob("*.jpeg"))
        ]
    if (DATA / "train").is_dir():
        sets["224x224 copies"] = [
            (f.name, f.read_bytes()) for f in sorted((DATA / "train").rglob("*.jpeg"))[:200]
        ]
    rows = []
    jem = [False, True] if Path(JEMALLOC).is_file() else [False]
    for jemalloc in jem:
        port = free_port()
        env = dict(os.environ, PNEUMO_JEMALLOC="1" if jemalloc else "0")
        env.pop("LD_PRELOAD", None)
        if jemalloc:
            env["LD_PRELOAD"] = JEMALLOC
        env.pop("PNEUMO_API_KEY", None)
        proc = subprocess.Popen(
            [
                *PNEUMO,
                "serve",
                "--port",
                str(port),
                "--model",
                str(model),
                *(["--backend", "onnx"] if jemalloc else []),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 180
            while time.time() < deadline:
                try:
                    if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("pneumo serve did not start")
            for name, payloads in sets.items():
                row = {
                    "jemalloc": jemalloc,
                    "images": name,
                    **load_test(f"{base}/v1/predict", payloads, 32, seconds),
                }
                row["server_peak_rss_mib"] = peak_rss_mib(proc.pid)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return rows


def training_benchmark() -> dict | None:
    bench = ROOT / "benchmarks" / "training.py"
    if not bench.is_file():
        return None
    out = subprocess.run([sys.executable, str(bench), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(res: dict) -> str:
    lines = [f"# pneumo benchmarks ({res['when']})", "", res["machine"], ""]
    if res.get("engine"):
        lines += [
            "## Engine vs torch eager",
            "",
            "| model | engine | img/s b1 | img/s b32 | p50 ms file | p95 ms file | x torch b32 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res["engine"]:
            sp = r.get("speedup_b32_vs_torch")
            lines.append(
                f"| {r['model']} | {r['engine']} | {r['b1_img_s']:.1f} | "
                f"{r['b32_img_s']:.1f} | {r.get('p50_ms', float('nan')):.1f} | "
                f"{r.get('p95_ms', float('nan')):.1f} | "
                f"{'' if sp is None else f'{sp:.1f}x'} |"
            )
        lines.append("")
    var = res.get("variants") or {}
    if var.get("ort_settings"):
        lines += [
            "## ONNX Runtime settings",
            "",
            "| graph opt | threads | img/s b1 | img/s b32 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['graph_optimization']} | {r['threads']} | {r['b1_img_s']:.1f} | "
            f"{r['b32_img_s']:.1f} |"
            for r in var["ort_settings"]
        ]
        lines.append("")
    if var.get("variants"):
        lines += [
            "## Precision variants (vs ONNX fp32, real images)",
            "",
            "| variant | img/s b32 | max abs dp | label flips | accuracy |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['variant']} | {r['b32_img_s']:.1f} | {r['max_abs_dp']:.4f} | "
            f"{r['label_flips']}/{r['images']} | {r['accuracy']:.3f} |"
            for r in var["variants"]
        ]
        lines.append("")
    if res.get("memory"):
        lines += [
            "## Peak memory",
            "",
            "| process | jemalloc | peak RSS MiB | wall s |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| predict | {r['jemalloc']} | {r['peak_rss_mib']:.0f} | {r['wall_s']:.1f} |"
            for r in res["memory"]
        ]
        lines += [
            f"| serve (after load test) | {r['jemalloc']} | {r['server_peak_rss_mib']:.0f} | |"
            for r in res.get("api", [])
            if r["images"] == res["api"][-1]["images"]
        ]
        lines.append("")
    if res.get("api"):
        lines += [
            "## API under load (32 clients, loopback)",
            "",
            "| images | jemalloc | s | requests | req/s | p50 ms | p95 ms | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['images']} | {r['jemalloc']} | {r['seconds']} | {r['requests']} | "
            f"{r['req_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['errors']} |"
            for r in res["api"]
        ]
        lines.append("")
    if res.get("training"):
        lines += ["## Training", "", "```", json.dumps(res["training"], indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (minutes, noisier)")
    ap.add_argument("--only", default="engine,variants,memory,api,training")
    ap.add_argument("--models", default="bundled,densenet121,resnet50")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(os.environ.get("PNEUMO_BENCH_MODELS", RESULTS / "models"))
    workdir.mkdir(parents=True, exist_ok=True)
    label, main_model = bundled_or_random(workdir)
    models = []
    for name in args.models.split(","):
        models.append(
            (label, main_model)
            if name == "bundled"
            else (f"{name} (random)", random_model(name, workdir))
        )
    files = sorted(ORIGINALS.rglob("*.jpeg")) if ORIGINALS.is_dir() else []
    res: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "quick": args.quick,
    }
    if "engine" in parts:
        res["engine"] = bench_engine(models, args.quick, files)
    if "variants" in parts:
        res["variants"] = bench_variants(main_model, args.quick)
    if "memory" in parts:
        res["memory"] = bench_memory(main_model, args.quick)
    if "api" in parts:
        res["api"] = bench_api(main_model, args.quick)
    if "training" in parts:
        res["training"] = training_benchmark()
    stamp = "quick" if args.quick else "full"
    (RESULTS / f"results-{stamp}.json").write_text(json.dumps(res, indent=1))
    (RESULTS / f"results-{stamp}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
