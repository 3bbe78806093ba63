"""The app's settings: checked when made, read from the environment the way the API reads its own."""

from __future__ import annotations

import pytest

from pneumo.app.settings import AppSettings
from pneumo.errors import PneumoError
from pneumo.settings_env import EnvReader


def test_settings_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="PNEUMO_BACKEND .tensorflow."):
        AppSettings(backend="tensorflow")
    with pytest.raises(ValueError, match="max_upload_mb"):
        AppSettings(max_upload_mb=0)
    monkeypatch.setenv("PNEUMO_MAX_UPLOAD_MB", "lots")
    with pytest.raises(PneumoError, match="bad app setting.*PNEUMO_MAX_UPLOAD_MB must be a number"):
        AppSettings.from_env()


def test_blank_variables_mean_the_defaults():
    env = {"PNEUMO_MODEL": " ", "PNEUMO_DB": "", "PNEUMO_BACKEND": "", "PNEUMO_MAX_UPLOAD_MB": " "}
    assert AppSettings.from_env(env) == AppSettings()


def test_values_are_read_trimmed():
    env = {
        "PNEUMO_MODEL": " /models/a ",
        "PNEUMO_DB": "sqlite:///x.db",
        "PNEUMO_BACKEND": "torch\n",
        "PNEUMO_MAX_UPLOAD_MB": "2.5",
    }
    got = AppSettings.from_env(env)
    assert (got.model_dir, got.db, got.backend, got.max_upload_mb) == (
        "/models/a",
        "sqlite:///x.db",
        "torch",
        2.5,
    )


def test_unreadable_numbers_name_the_variable():
    with pytest.raises(PneumoError, match="PNEUMO_X must be a number, got '2,5'"):
        EnvReader({"PNEUMO_X": "2,5"}).number("PNEUMO_X", float, 1.0)


def test_flags():
    read = EnvReader({"A": "Yes", "B": "off", "C": " ", "D": "maybe"})
    assert (read.flag("A", False), read.flag("B", True), read.flag("C", True)) == (
        True,
        False,
        True,
    )
    with pytest.raises(PneumoError, match="D must be 1 or 0"):
        read.flag("D", False)
