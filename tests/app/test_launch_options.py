"""`pneumo app --host` (issue 19): localhost unless told, the address reaches the server, and a
malformed one is refused in one line before anything starts."""

from __future__ import annotations

from pneumo.app.launch import streamlit_command
from pneumo.cli import build_parser, main


def test_host_defaults_to_this_machine_and_reaches_the_server():
    assert build_parser().parse_args(["app"]).host == "localhost"
    command = streamlit_command(8600, 20.0, "0.0.0.0")
    assert command[command.index("--server.address") + 1] == "0.0.0.0"


def test_a_malformed_host_is_refused_in_one_line(capsys):
    assert main(["app", "--host", "bad host"]) == 2
    assert (
        capsys.readouterr().err == "error: --host must be a host name or address, got 'bad host'\n"
    )
