"""Names and messages shown on the page cannot act as Markdown (issue 10): an upload or a URL
named like an image link must not load anything or fake a result."""

from __future__ import annotations

import re

import pytest

from pneumo.app.display import md

ACTIVE = re.compile(r"(?<!\\)(!?\[[^\]]*(?<!\\)\]\(|<[a-zA-Z/]|(?<!\\)\$|(?<!\\)\*\*|(?<!\\)`)")


@pytest.mark.parametrize(
    "name",
    [
        "![pixel](https://tracker.example/p.png)",
        "[click me](javascript:alert(1)).jpeg",
        "<img src=x onerror=alert(1)>.png",
        "$\\\\begin{bmatrix}x\\\\end{bmatrix}$.dcm",
        "**PNEUMONIA: 99.9%** scan.jpeg",
        "`code`.png",
        "line\nbreak ## heading.png",
    ],
)
def test_active_markdown_is_escaped(name):
    shown = md(name)
    assert not ACTIVE.search(shown), shown
    assert "\n" not in shown


def test_plain_names_and_messages_stay_readable():
    for text in ("person1_virus_1.jpeg", "notes.jpeg: not an image (unknown format)", "a-b.c"):
        assert md(text) == text
