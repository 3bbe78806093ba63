"""Bad command-line arguments end in one line on stderr and a non-zero status, on every
subcommand, never a Python traceback (issue 10, defect 9)."""

from __future__ import annotations

import argparse

import pytest

from pneumo.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*prefix, name))
            return
    yield prefix, parser


def _numeric_options():
    for words, parser in _subcommands(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.type not in (None, str) and action.nargs is None:
                if getattr(action.type, "__name__", "") in ("Path", "_json_path"):
                    continue
                yield pytest.param(
                    words,
                    action.option_strings[-1],
                    id=" ".join((*words, action.option_strings[-1])),
                )


NUMERIC = list(_numeric_options())


def test_the_campaign_covers_every_numeric_option():
    assert len(NUMERIC) >= 15
    names = {p.id for p in NUMERIC}
    assert {"train --batch-size", "predict --batch-size", "serve --port", "app --port"} <= names


@pytest.mark.parametrize(("words", "option"), NUMERIC)
def test_a_non_number_is_a_one_line_usage_error(words, option, capsys):
    with pytest.raises(SystemExit) as info:
        main([*words, option, "not-a-number"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pneumo {' '.join(words)}: error: argument")


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "x.jpeg", "--batch-size", "0"],
        ["predict", "x.jpeg", "--batch-size", "-3"],
        ["predict", "x.jpeg", "--ray", "--batch-size", "0"],  # never a silent default instead
        ["predict", "x.jpeg", "--threads", "0"],
        ["predict", "x.jpeg", "--threads", "99999999"],
        ["serve", "--port", "0"],
        ["serve", "--port", "70000"],
        ["serve", "--workers", "0"],
        ["app", "--port", "-1"],
        ["app", "--max-upload-mb", "nan"],
        ["app", "--max-upload-mb", "inf"],
        ["app", "--max-upload-mb", "0"],
        ["export", "--opset", "1"],
        ["data", "labels", "-o", "x", "--val-fraction", "1.5"],
        ["data", "show", "-o", "x.png", "--per-class", "0"],
    ],
    ids=" ".join,
)
def test_out_of_range_values_are_refused_in_one_line(argv, capsys):
    """Each range is checked once, by the function the command calls; its message is the one
    line the user sees."""
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    option = argv[-2]
    assert option in err or option.lstrip("-").replace("-", "_") in err  # names the option


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--batch-size", "0"],
        ["compare", "--backbones", "tf_efficientnet_lite0", "--batch-size", "0"],
        ["train", "--epochs", "0"],
        ["train", "--lr", "0"],
    ],
    ids=" ".join,
)
def test_values_the_settings_refuse_give_one_line(argv, capsys):
    """The settings dataclasses check values with ValueError: the CLI turns it into a line that
    names the option (0 is refused, never silently replaced by a default)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert argv[-2] in err


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys):
    import pneumo.cli.inference as inference

    def boom(*_args, **_kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(inference, "predict_files", boom)
    assert main(["predict", "x.jpeg"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: RuntimeError: something broke (run with -v for the details)"
