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


HEADING_NAME_LIMIT = 40
"""Longest file name put whole into a result heading: a longer word has no place to wrap and
the browser breaks it mid-word."""


def short_name(name: str, limit: int = HEADING_NAME_LIMIT) -> str:
    """``name`` cut in the middle (start and extension kept) when longer than ``limit``."""
    name = " ".join(str(name).split())
    if len(name) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    tail = f"{dot}{ext}" if dot and len(ext) <= 5 else name[-8:]
    keep = limit - len(tail) - 1
    return f"{name[:keep]}\u2026{tail}"


def describe_ood_score(score: float | None, cutoff: float | None) -> str:
    """The out-of-distribution distance in words a clinician can act on (empty without one)."""
    if score is None:
        return ""
    said = f"Distance from the chest X-rays the model learnt from: {score:.2f}"
    if cutoff is None:
        return f"{said} (the higher, the less alike)."
    if score > cutoff:
        return (
            f"{said}, where real chest X-rays score at most {cutoff:.2f}: the image is too "
            "unlike them for the model's answer to mean anything."
        )
    return (
        f"{said}, within the range of real chest X-rays (up to {cutoff:.2f}); the image was "
        "set aside for the reason above."
    )


def download_pair(
    build, labels: tuple[str, str], names: tuple[str, str], key: str | None = None
) -> None:
    """A CSV and a PDF download button side by side. ``build(kind)`` returns the callable that
    makes the file, so it is built (and audited) only when clicked; no rerun on click."""
    import streamlit as st

    left, right = st.columns(2)
    for column, kind, label, name, mime in (
        (left, "csv", labels[0], names[0], "text/csv"),
        (right, "pdf", labels[1], names[1], "application/pdf"),
    ):
        column.download_button(
            label,
            build(kind),
            file_name=name,
            mime=mime,
            on_click="ignore",
            key=f"{key}_{kind}" if key else None,
        )
