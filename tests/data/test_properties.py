"""Property-based tests (hypothesis) for what users and attackers control: bytes to decode,
CSV lists of inputs, file names, command-line arguments (issue 10)."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus import dicom, encode, xray
from pneumo.data.decode import header_pixels, load_grey, printable
from pneumo.errors import ImageDecodeError, PneumoError

SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
SEEDS = {
    "jpeg": encode(xray(48), "JPEG"),
    "png": encode(xray(48), "PNG"),
    "png16": encode(xray(48).convert("I;16"), "PNG"),
    "dicom": dicom(size=48),
}


def _decode_or_refuse(data: bytes) -> None:
    try:
        img = load_grey(data, name="fuzz")
    except ImageDecodeError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
    else:
        assert img.mode == "L" and min(img.size) >= 16
    assert header_pixels(data) >= 0


@SETTINGS
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_give_one_line_reason(data):
    _decode_or_refuse(data)


@SETTINGS
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutated_images_decode_or_give_one_line_reason(kind, flips, cut):
    data = bytearray(SEEDS[kind])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    _decode_or_refuse(bytes(data))


@SETTINGS
@given(st.text(max_size=400))
def test_csv_lists_give_inputs_or_a_plain_error(tmp_path_factory, content):
    from pneumo.inference.predict import collect_inputs

    folder = tmp_path_factory.mktemp("csv")
    listing = folder / "list.csv"
    listing.write_text(content, encoding="utf-8", errors="surrogateescape")
    try:
        inputs = collect_inputs([listing])
    except PneumoError as exc:
        assert "list.csv" in str(exc)
    else:
        assert all(isinstance(i.path, str) and i.path for i in inputs)


@SETTINGS
@given(st.binary(min_size=1, max_size=60).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_any_file_name_prints_as_one_utf8_line(raw):
    text = printable(os.fsdecode(raw))
    text.encode("utf-8")  # never raises
    assert not any(ord(c) < 32 or ord(c) == 127 for c in text)


ARG = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e999", "99999999999999999999", "", "--"]),
)
COMMANDS = [
    ["predict"],
    ["serve"],
    ["export"],
    ["app"],
    ["data", "stats"],
    ["data", "labels"],
    ["data", "show"],
    ["data", "download"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@settings(max_examples=60, deadline=None, database=None)
@given(values=st.lists(ARG, max_size=3))
def test_argument_parsing_never_raises_a_traceback(command, values):
    """Whatever the arguments, parsing accepts them or exits with a usage error (status 2)."""
    from contextlib import redirect_stderr

    from pneumo.cli import build_parser

    parser = build_parser()
    option_names = [
        o
        for a in _subparser(parser, command)._actions
        for o in a.option_strings
        if o.startswith("--")
    ]
    argv = list(command)
    for i, value in enumerate(values):
        argv += [option_names[i % len(option_names)], value]
    with redirect_stderr(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2)


def _subparser(parser, words):
    import argparse

    for word in words:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[word]
    return parser
