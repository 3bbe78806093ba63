"""Recipes as files: `pneumo train --config recipe.toml` gives the run the recipe describes,
the bundled model's recipe is kept in configs/ and reproduces the settings its model.json
records, options on the command line win over the file, and a typo in a recipe is refused."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from pneumo.cli.training import _add_train_options, config_from_args
from pneumo.training.config import TrainConfig, field_docs, option_flag

REPO = Path(__file__).resolve().parents[2]
BUNDLED_RECIPE = REPO / "configs" / "bundled-lite2.toml"


def _cli(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default=None)
    _add_train_options(parser)
    args = parser.parse_args(list(argv))
    return config_from_args(args, args.backbone)


def test_the_bundled_recipe_reproduces_the_bundled_models_settings():
    recorded = json.loads((REPO / "models/default/model.json").read_text())["training"]
    cfg = _cli("--config", str(BUNDLED_RECIPE), "--data", "somewhere").to_dict()
    machine_or_run = {"data", "output", "resume", "variant", "augment"}
    differing = {
        k: (recorded.get(k), cfg.get(k))
        for k in set(recorded) | set(cfg)
        if k not in machine_or_run and recorded.get(k) != cfg.get(k)
    }
    assert differing == {}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["augment"].items()} == (
        recorded["augment"]
    )


def test_options_on_the_command_line_win_over_the_recipe(tmp_path):
    cfg = _cli("--config", str(BUNDLED_RECIPE), "--data", "d", "--lr", "0.003", "--freeze-bn")
    assert (cfg.lr, cfg.freeze_bn, cfg.backbone, cfg.epochs) == (
        0.003,
        True,
        "tf_efficientnet_lite2",
        8,
    )
    assert _cli("--config", str(BUNDLED_RECIPE), "--backbone", "x").backbone == "x"
    assert cfg.output == Path("runs/tf_efficientnet_lite2-finetune")


def test_a_recipe_may_name_its_data_but_the_command_line_wins(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('data = "from/recipe"\nmode = "finetune"\n[augment]\nrotation = 5.0\n')
    assert _cli("--config", str(recipe)).data == Path("from/recipe")
    assert _cli("--config", str(recipe), "--data", "cli").data == Path("cli")
    assert _cli("--config", str(recipe)).augment.rotation == 5.0
    assert _cli("--config", str(recipe), "--no-augment").augment.rotation == 0.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("head_inti = 'zero'\n", "unknown recipe key(s) head_inti"),
        ("output = 'runs/x'\n", "unknown recipe key(s) output"),
        ("[augment]\nrotaton = 3\n", "unknown [augment] key(s) rotaton"),
        ("lr = \n", "not a valid TOML recipe"),
        ("head_init = 'lpft'\n", "head_init must be one of"),
    ],
)
def test_a_bad_recipe_is_refused_with_its_problem(tmp_path, text, problem):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    with pytest.raises(ValueError, match=re.escape(problem)):
        _cli("--config", str(recipe))


def test_every_setting_has_an_option_documented_by_its_field():
    """The help is generated from TrainConfig's field docs: a new field gets its option and its
    text without anyone copying it."""
    result = subprocess.run(
        [sys.executable, "-m", "pneumo", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
    )
    docs = field_docs()
    apart = {"data", "output", "backbone", "augment", "resume", "pretrained", "freeze_bn"}
    for f in fields(TrainConfig):
        assert f.name in docs, f"TrainConfig.{f.name} has no docstring"
        if f.name not in apart:
            assert option_flag(f.name) in result.stdout
            assert docs[f.name][:40] in " ".join(result.stdout.split())
    assert "--no-augment" in result.stdout and "--train-bn" in result.stdout


def test_pneumo_train_reads_a_recipe_end_to_end(tmp_path, tiny_data):
    """The command itself, on a generated data set: the recipe's settings reach config.json."""
    recipe = tmp_path / "quick.toml"
    recipe.write_text(
        'backbone = "test_efficientnet"\nmode = "frozen"\nepochs = 1\nseed = 3\n'
        "pretrained = false\nmax_images = 24\nworkers = 0\n"
    )
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "pneumo", "train", "--config", str(recipe)]
        + ["--data", str(tiny_data), "--output", str(out), "--batch-size", "8"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    saved = json.loads((out / "config.json").read_text())
    assert (saved["backbone"], saved["seed"], saved["epochs"], saved["batch_size"]) == (
        "test_efficientnet",
        3,
        1,
        8,
    )
