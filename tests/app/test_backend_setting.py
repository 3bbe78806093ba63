"""PNEUMO_BACKEND and --backend mean one thing in `pneumo app`, `pneumo predict` and
`pneumo serve` (issue 18): the same choices, the same default, checked before anything starts."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.api.settings import ApiSettings
from pneumo.app.settings import AppSettings
from pneumo.cli import build_parser
from pneumo.errors import PneumoError
from pneumo.inference.engine import BACKENDS, DEFAULT_BACKEND, configured_backend

SRC = Path(__file__).resolve().parents[2] / "src"
COMMANDS = ("app", "predict", "serve")


def _backend_option(command: str) -> argparse.Action:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[command]._actions if a.dest == "backend")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_offers_the_same_backends_and_default(command):
    option = _backend_option(command)
    assert tuple(option.choices) == BACKENDS
    assert option.default is None  # no flag: PNEUMO_BACKEND, else auto
    for backend in BACKENDS:
        assert build_parser().parse_args([command, "--backend", backend]).backend == backend


@pytest.mark.parametrize("command", COMMANDS)
def test_without_a_flag_every_command_runs_the_variable_else_auto(command, monkeypatch):
    flag = build_parser().parse_args([command]).backend
    monkeypatch.delenv("PNEUMO_BACKEND", raising=False)
    assert configured_backend(flag) == DEFAULT_BACKEND == "auto"
    monkeypatch.setenv("PNEUMO_BACKEND", "torch")
    assert configured_backend(flag) == "torch"
    assert (
        configured_backend(build_parser().parse_args([command, "--backend", "onnx"]).backend)
        == "onnx"
    )
    monkeypatch.setenv("PNEUMO_BACKEND", "tensorflow")
    with pytest.raises(PneumoError, match="PNEUMO_BACKEND 'tensorflow'"):
        configured_backend(flag)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_app_and_the_api_read_the_variable_alike(backend):
    env = {"PNEUMO_BACKEND": backend}
    assert AppSettings.from_env(env).backend == ApiSettings.from_env(env).backend == backend
    assert AppSettings.from_env({}).backend == ApiSettings.from_env({}).backend == DEFAULT_BACKEND


def test_an_unknown_backend_is_refused_by_both_naming_the_variable():
    env = {"PNEUMO_BACKEND": "tensorflow"}
    with pytest.raises(PneumoError, match="PNEUMO_BACKEND.*tensorflow"):
        ApiSettings.from_env(env)
    with pytest.raises(PneumoError, match="PNEUMO_BACKEND.*tensorflow.*auto, openvino, onnx"):
        AppSettings.from_env(env)


def test_a_bad_backend_stops_pneumo_app_before_it_says_anything(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "app", "--backend", "tensorflow"],
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid choice: 'tensorflow'" in done.stderr
    assert "http://" not in done.stderr + done.stdout
