"""Engine vs torch eager on the bundled model, median of 7 timed passes per batch size, in one
process (a steadier figure than run_all.py's quick mode).

    python benchmarks/engine_medians.py
"""

import time

import numpy as np


def images_per_second(predictor, batch: np.ndarray, repeats: int = 7) -> float:
    predictor.forward(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.forward(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / float(np.median(times))


def main() -> None:
    from pneumo.inference.engine import load_predictor

    onnx, eager = load_predictor(backend="onnx"), load_predictor(backend="torch")
    h, w = onnx.metadata.data_config.input_size
    x = np.random.default_rng(0).normal(0, 1, (32, 3, h, w)).astype(np.float32)
    for b in (1, 8, 32):
        o, t = images_per_second(onnx, x[:b]), images_per_second(eager, x[:b])
        print(f"batch {b}: onnx {o:.1f} img/s, torch eager fp32 {t:.1f} img/s ({o / t:.1f}x)")


if __name__ == "__main__":
    main()
