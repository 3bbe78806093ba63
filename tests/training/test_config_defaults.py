"""One source for the defaults: Python callers and the CLI train with the same settings."""

from __future__ import annotations

import argparse

import pytest

from pneumo.cli.training import _add_train_options, config_from_args
from pneumo.training.config import MODE_DEFAULTS, TrainConfig


def _cli(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    _add_train_options(parser)
    args = parser.parse_args(["--data", "somewhere", *argv])
    return config_from_args(args, args.backbone)


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_python_and_cli_defaults_agree(mode):
    from_python = TrainConfig(mode=mode, data="somewhere", output="runs/x")
    from_cli = _cli("--mode", mode, "--output", "runs/x")
    assert from_python.to_dict() == from_cli.to_dict()
    assert (from_python.epochs, from_python.lr) == (
        MODE_DEFAULTS[mode]["epochs"],
        MODE_DEFAULTS[mode]["lr"],
    )


def test_finetune_defaults_to_a_small_rate_for_longer():
    cfg = TrainConfig(mode="finetune")
    assert cfg.lr < TrainConfig(mode="frozen").lr and cfg.epochs > TrainConfig().epochs


def test_explicit_values_win_and_zero_epochs_is_refused():
    assert _cli("--mode", "finetune", "--epochs", "2", "--lr", "0.01").epochs == 2
    assert TrainConfig(mode="finetune", lr=0.01).lr == 0.01
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        _cli("--mode", "finetune", "--epochs", "0")


def test_a_saved_config_reads_back_the_same():
    cfg = TrainConfig(mode="finetune", data="d", output="o")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_the_default_recipe_is_the_one_held_out_films_rewarded():
    """Zero head with trained batch norm (issue 17's measurements on held-out films), and an
    operating point at 97% validation sensitivity; LP-FT with frozen statistics stays an option."""
    cfg = _cli("--mode", "finetune")
    assert (cfg.head_init, cfg.freeze_bn) == ("zero", False)
    assert (cfg.threshold_method, cfg.target_sensitivity) == ("sensitivity", 0.97)
    lpft = _cli("--mode", "finetune", "--head-init", "probe", "--freeze-bn")
    assert (lpft.head_init, lpft.freeze_bn) == ("probe", True)
    assert _cli("--mode", "finetune", "--train-bn").freeze_bn is False
    with pytest.raises(SystemExit):
        _cli("--mode", "finetune", "--train-bn", "--freeze-bn")
