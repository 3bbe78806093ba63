"""Fixtures of the data-layer tests."""

from __future__ import annotations

import pytest

from pneumo.cli import main


@pytest.fixture
def cli(capsys):
    """Run ``pneumo ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
