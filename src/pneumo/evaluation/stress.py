"""A robustness report: the model's figures on a labeled folder under a seeded battery of
acquisition shifts (exposure, contrast, blur, compression, noise, resolution, positioning),
per shift and per subgroup (NORMAL series, bacterial or viral pneumonia).

It is a deployment check for a site's own films, not a selection signal: on validation carved
from train these shifts barely move ROC-AUC (training augmentation covers them), while the real
train-to-test shift of this data set costs far more.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from pneumo.data.decode import load_grey
from pneumo.errors import ImageDecodeError
from pneumo.evaluation.metrics import compute_metrics


def _gamma(g: float) -> Callable[[Image.Image, np.random.Generator], Image.Image]:
    table = [round(255 * (i / 255) ** g) for i in range(256)]
    return lambda img, rng: img.point(table)


def _contrast(factor: float):
    def apply(img, rng):
        a = np.asarray(img, dtype=np.float32)
        out = (a - a.mean()) * factor + a.mean()
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))

    return apply


def _jpeg(quality: int):
    def apply(img, rng):
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("L")

    return apply


def _noise(sigma: float):
    def apply(img, rng):
        a = np.asarray(img, dtype=np.float32)
        return Image.fromarray(
            np.clip(a + rng.normal(0, sigma * 255, a.shape), 0, 255).astype(np.uint8)
        )

    return apply


def _downsample(factor: float):
    def apply(img, rng):
        w, h = img.size
        small = img.resize((max(8, int(w * factor)), max(8, int(h * factor))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)

    return apply


def _rotate(degrees: float):
    return lambda img, rng: img.rotate(float(rng.uniform(-degrees, degrees)), Image.BILINEAR)


def _zoom(scale: float):
    def apply(img, rng):
        w, h = img.size
        cw, ch = int(w * scale), int(h * scale)
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
        return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)

    return apply


SHIFTS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "none": lambda img, rng: img,
    "darker (gamma 1.6)": _gamma(1.6),
    "brighter (gamma 0.6)": _gamma(0.6),
    "low contrast (x0.6)": _contrast(0.6),
    "high contrast (x1.4)": _contrast(1.4),
    "equalised histogram": lambda img, rng: ImageOps.equalize(img),
    "blur (sigma 1.5 px)": lambda img, rng: img.filter(ImageFilter.GaussianBlur(1.5)),
    "JPEG quality 20": _jpeg(20),
    "noise (sigma 3%)": _noise(0.03),
    "half resolution": _downsample(0.5),
    "rotation up to 10 degrees": _rotate(10),
    "zoom to 85% crop": _zoom(0.85),
}
"""The battery, by name: each takes a grey image and a seeded generator."""


def subgroup(relpath: str, label: str) -> str:
    """The subgroup of a Kermany file: NORMAL series (IM-, NORMAL2-IM-), bacterial or viral."""
    name = Path(relpath).name.lower()
    if label == "NORMAL":
        if name.startswith("normal2-"):
            return "NORMAL (NORMAL2-IM series)"
        if re.match(r"im-\d", name):
            return "NORMAL (IM series)"
        return "NORMAL (other)"
    if "bacteria" in name:
        return "PNEUMONIA (bacterial)"
    if "virus" in name:
        return "PNEUMONIA (viral)"
    return "PNEUMONIA (other)"


def stress_test(predictor, records, *, seed: int = 0, chunk: int = 64, advance=None) -> dict:
    """Run the battery over ``records`` (labelled ImageRecords). Returns per-shift metrics at
    the model's threshold, per-subgroup rates, and the images that could not be read."""

    threshold = predictor.metadata.threshold
    p = {name: [] for name in SHIFTS}
    kept, skipped = [], []
    for start in range(0, len(records), chunk):
        images, part = [], []
        for record in records[start : start + chunk]:
            try:
                images.append(load_grey(record.path))
                part.append(record)
            except ImageDecodeError as exc:
                skipped.append({"path": record.relpath, "reason": exc.reason})
        kept += part
        for index, (name, shift) in enumerate(SHIFTS.items()):
            # One generator per (shift, chunk): figures do not depend on which shifts ran.
            rng = np.random.default_rng([seed, index, start])
            shifted = [shift(img, rng) for img in images]
            preds = predictor.predict_images(shifted, [r.relpath for r in part])
            p[name] += [pred.model_probability for pred in preds]
        if advance:
            advance(len(records[start : start + chunk]))
    if not kept:
        raise ValueError("none of the images could be read")
    y = np.array([r.label_index for r in kept])
    groups = np.array([subgroup(r.relpath, r.label) for r in kept])
    shifts = {}
    for name, probs in p.items():
        probs = np.asarray(probs)
        m = compute_metrics(y, probs, threshold)
        per_group = {}
        for g in sorted(set(groups)):
            mask = groups == g
            called = probs[mask] >= threshold
            # For a NORMAL group the share called NORMAL is its specificity; for a PNEUMONIA
            # group the share called PNEUMONIA is its sensitivity.
            rate = float(np.mean(~called)) if g.startswith("NORMAL") else float(np.mean(called))
            per_group[g] = {
                "n": int(mask.sum()),
                "correct": rate,
                "mean_p": float(probs[mask].mean()),
            }
        shifts[name] = {**m.to_dict(), "subgroups": per_group}
    return {
        "threshold": threshold,
        "n": len(kept),
        "seed": seed,
        "shifts": shifts,
        "skipped": skipped,
    }


def write_stress_report(report: dict, output: Path) -> None:
    """The report as JSON and as a Markdown table beside it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    groups = sorted({g for s in report["shifts"].values() for g in s["subgroups"]})
    head = ["shift", "ROC-AUC", "accuracy", "sensitivity", "specificity", *groups]
    lines = [
        f"# Stress test: {report['n']} images, threshold {report['threshold']:.3f}, "
        f"seed {report['seed']}",
        "",
        "Subgroup columns: share of the group classified correctly.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    for name, s in report["shifts"].items():
        auc = "n/a" if s.get("roc_auc") is None else f"{s['roc_auc']:.3f}"
        cells = [name, auc, pct(s["accuracy"]), pct(s["sensitivity"]), pct(s["specificity"])]
        cells += [pct(s["subgroups"].get(g, {}).get("correct")) for g in groups]
        lines.append("| " + " | ".join(cells) + " |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
