"""How a model's logits become probabilities: the one temperature-scaled softmax that
calibration fits, training reports and serving answers with (numpy only, so the serving path
needs neither torch nor scipy for it)."""

from __future__ import annotations

import numpy as np


def temperature_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` per row, in float64; column 1 is P(PNEUMONIA)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
