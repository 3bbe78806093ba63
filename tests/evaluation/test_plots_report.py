"""Figures are real PNGs; the report's JSON, Markdown and figures agree with the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pneumo.evaluation import plots
from pneumo.evaluation.metrics import RATE_METRICS, compute_metrics
from pneumo.evaluation.report import write_report

HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "train_accuracy": 0.7 + e / 50,
        "val_loss": 1.2 / e,
        "val_accuracy": 0.65 + e / 50,
        "val_roc_auc": 0.8,
        "val_balanced_accuracy": 0.6 + e / 50,
        "lr": 1e-3,
        "seconds": 10.0,
    }
    for e in range(1, 6)
]


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def _assert_png(path, min_size=(300, 300)):
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
        # not a blank canvas: something was drawn
        assert len(np.unique(np.asarray(img.convert("L")))) > 20


def test_each_plot_writes_a_png(tmp_path):
    y, p = _data()
    written = [
        plots.plot_training_curves(HISTORY, tmp_path / "curves.png"),
        plots.plot_confusion_matrix([[10, 5], [2, 30]], tmp_path / "sub" / "cm.png"),
        plots.plot_roc(y, p, 0.5, tmp_path / "roc.png"),
        plots.plot_reliability(y, p, tmp_path / "rel.png"),
    ]
    for path in written:
        assert path.is_file()
        _assert_png(path)


def test_plots_do_not_touch_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "cm.png")
    assert plt.get_fignums() == before


def test_plot_input_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plots.plot_training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="NORMAL and PNEUMONIA"):
        plots.plot_roc([1, 1], [0.2, 0.9], 0.5, tmp_path / "x.png")


def test_report_json_markdown_and_figures(tmp_path):
    y, p = _data()
    groups = [f"person{i // 3}" for i in range(y.size)]
    out = tmp_path / "reports" / "test.json"
    report = write_report(
        out,
        y_true=y,
        p=p,
        threshold=0.5,
        groups=groups,
        history=HISTORY,
        model_info={"backbone": "test_efficientnet"},
        split="test",
        skipped=[{"path": "test/NORMAL/bad.jpeg", "reason": "empty file (0 bytes)"}],
        n_boot=200,
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == report
    point = compute_metrics(y, p, 0.5)
    for key in RATE_METRICS:
        assert report[key] == pytest.approx(point[key])
        lo, hi = report["ci95"][key]
        assert 0 <= lo <= report[key] <= hi <= 1
    base = report["baseline_always_pneumonia"]
    assert base["accuracy"] == pytest.approx(y.mean()) and base["balanced_accuracy"] == 0.5
    assert report["bootstrap"]["unit"] == "patient" and report["bootstrap"]["n_units"] == 100
    assert "doi:10.17632/rscbjbr9sj.2" in report["data"] and "CC BY 4.0" in report["data"]
    assert report["split"] == "test" and report["threshold"] == 0.5

    md = out.with_suffix(".md").read_text()
    assert set(report["plots"]) == {"confusion_matrix", "roc", "reliability", "training"}
    for name in report["plots"].values():
        assert f"]({name})" in md  # linked relative to the Markdown file
        _assert_png(out.parent / name)
    assert f"{100 * report['accuracy']:.1f}%" in md
    assert f"{100 * base['accuracy']:.1f}%" in md  # baseline column
    assert "test/NORMAL/bad.jpeg" in md and "empty file" in md
    assert "Kermany" in md and "CC BY 4.0" in md


def test_report_with_one_class_has_no_roc_and_says_why(tmp_path):
    out = tmp_path / "pneu.json"
    report = write_report(
        out,
        y_true=[1, 1, 1, 1],
        p=[0.9, 0.8, 0.3, 0.7],
        threshold=0.5,
        model_info={},
        split="val",
        n_boot=50,
    )
    assert report["roc_auc"] is None and report["ci95"]["roc_auc"] is None
    assert "roc" not in report["plots"]
    assert "only one class" in out.with_suffix(".md").read_text()


def test_report_path_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="must end in .json"):
        write_report(
            tmp_path / "r.md", y_true=[0, 1], p=[0.1, 0.9], threshold=0.5, model_info={}, split="t"
        )
