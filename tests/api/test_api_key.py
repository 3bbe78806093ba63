"""The API key: what the README and `pneumo serve --help` say about it is true, and only the
exact key opens the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pneumo.api.settings import MIN_API_KEY_LENGTH, ApiSettings
from pneumo.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_serve_examples_have_keys_serve_accepts():
    keys = re.findall(r"PNEUMO_API_KEY=(\S+) pneumo serve", README.read_text(encoding="utf-8"))
    assert keys, "the README shows how to serve with an API key"
    for key in keys:  # what `pneumo serve` checks before it starts
        assert ApiSettings.from_env({"PNEUMO_API_KEY": key}).api_key == key


def test_serve_help_names_the_shortest_key(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"PNEUMO_API_KEY (at least {MIN_API_KEY_LENGTH} characters" in help_text


@pytest.mark.parametrize(
    "variant",
    [
        lambda k: k[:-1],  # a prefix
        lambda k: k[:MIN_API_KEY_LENGTH],
        lambda k: k[2:-2],  # a substring
        lambda k: k + "x",  # the key plus extra characters
        lambda k: k + k,
        lambda k: "x" + k,
        lambda k: k.upper(),
    ],
    ids=["prefix", "short-prefix", "substring", "extra", "doubled", "leading", "case"],
)
def test_only_the_exact_key_opens_the_api(keyed_client, api_key, variant, xray_jpeg):
    wrong = variant(api_key)
    assert wrong != api_key
    r = keyed_client.get("/v1/model", headers={"X-API-Key": wrong})
    assert r.status_code == 401
    files = [("files", ("x.jpeg", xray_jpeg, "image/jpeg"))]
    r = keyed_client.post("/v1/predict", files=files, headers={"X-API-Key": wrong})
    assert r.status_code == 401
    assert keyed_client.get("/v1/model", headers={"X-API-Key": api_key}).status_code == 200
