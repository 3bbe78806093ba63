"""How names, labels and messages are shown: on the page, in the history and in the exports."""

from __future__ import annotations

DISPLAY_NAMES = {"NORMAL": "Normal", "PNEUMONIA": "Pneumonia"}

_MARKDOWN = {c: "\\" + c for c in "\\`*[]<>$~"}


def md(text: object) -> str:
    """``text`` with the Markdown that could act escaped (links and images, HTML, code,
    emphasis, LaTeX ``$``), for names and messages put into Streamlit elements that render
    Markdown: an upload or URL named ``![x](https://...)`` must not load an image from
    elsewhere or fake a result on the page. Plain names and messages are left as they are."""
    return " ".join(str(text).split()).translate(str.maketrans(_MARKDOWN))


def display_label(label: str | None) -> str:
    return DISPLAY_NAMES.get(label or "", label or "")


NOT_DIAGNOSED = "not a chest X-ray (not diagnosed)"
"""The result shown for a film flagged out of distribution, wherever a result is shown."""


def display_result(label: str | None, ood: bool) -> str:
    """The result column of the page, the history and the exports."""
    return NOT_DIAGNOSED if ood else display_label(label)
