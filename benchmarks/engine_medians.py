"""Engine vs torch eager on the bundled model, median of 7 timed passes per batch size, in one
process (a steadier figure than run_all.py's quick mode).

    python benchmarks/engine_medians.py
"""

import time

import numpy as np

from pneumo.inference.engine import load_predictor

o = load_predictor(backend="onnx")
t = load_predictor(backend="torch")
x = np.random.default_rng(0).normal(0, 1, (32, 3, 224, 224)).astype(np.float32)


def rate(p, b, reps=7):
    xb = x[:b]
    p.forward(xb)
    ts = []
    for _ in range(reps):
        s = time.perf_counter()
        p.forward(xb)
        ts.append(time.perf_counter() - s)
    return b / np.median(ts)


for b in (1, 8, 32):
    print(f"batch {b}: onnx {rate(o, b):.1f} img/s, torch eager fp32 {rate(t, b):.1f} img/s")
