"""What the clinician hands in: the patient, checked once here, and the images as input
items, uploaded files and an image URL each refused on its own (too large, too many, fetch
refused) without stopping the others. The URL fetch itself, with its address checks, lives in
``fetch``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pneumo.app.fetch import FetchError, FetchPolicy, fetch_image
from pneumo.app.settings import AppSettings
from pneumo.data.decode import mib, printable
from pneumo.errors import PneumoError
from pneumo.storage.repository import clean_patient


@dataclass(frozen=True)
class PatientEntry:
    """Who the images are of, as typed on the page and tidied; made by ``read_patient``."""

    name: str
    patient_id: str = ""


def read_patient(name: str | None, patient_id: str | None = "") -> PatientEntry:
    """The patient fields, trimmed; raises PatientInputError for a missing or bad name (the
    storage layer's rules, the only place they are written down)."""
    return PatientEntry(*clean_patient(name, patient_id))


class NothingToClassify(PneumoError):
    """Neither an upload nor a URL was handed in."""

    def __init__(self):
        super().__init__("Add at least one image: upload files or enter an image URL.")


@dataclass
class InputItem:
    """One image to classify: its bytes, or why it could not be had."""

    name: str
    data: bytes | None = None
    error: str | None = None


def read_images(uploads: list[Any], url: str, settings: AppSettings) -> list[InputItem]:
    """The uploads, then the image behind ``url``, as items; raises NothingToClassify when
    there are neither."""
    items = read_uploads(uploads, settings)
    url_item = read_url(url, settings)
    if url_item is not None:
        items.append(url_item)
    if not items:
        raise NothingToClassify()
    return items


def read_uploads(uploads: list[Any], settings: AppSettings) -> list[InputItem]:
    """Streamlit UploadedFiles (or anything with ``name``, ``size``, ``getvalue``) -> items,
    refusing files over the size cap and beyond ``max_files`` one by one."""
    items = []
    for i, up in enumerate(uploads or []):
        name = printable(str(getattr(up, "name", None) or f"upload {i + 1}"))[:255]
        size = int(getattr(up, "size", 0) or 0)
        if i >= settings.max_files:
            items.append(
                InputItem(
                    name,
                    error=f"{name}: more than {settings.max_files} "
                    "files in one submission; submit it again on its own",
                )
            )
        elif size > settings.max_bytes:
            items.append(InputItem(name, error=_too_big(name, size, settings)))
        else:
            data = up.getvalue()
            if len(data) > settings.max_bytes:
                items.append(InputItem(name, error=_too_big(name, len(data), settings)))
            else:
                items.append(InputItem(name, data=data))
    return items


def _too_big(name: str, size: int, settings: AppSettings) -> str:
    return f"{name}: file too large ({mib(size)}; the limit is {mib(settings.max_bytes)})"


def read_url(
    url: str,
    settings: AppSettings,
    fetch: Callable[[str, FetchPolicy], Any] = fetch_image,
    policy: FetchPolicy | None = None,
) -> InputItem | None:
    """The image behind ``url`` as an item (an error item when refused); None for no URL."""
    url = (url or "").strip()
    if not url:
        return None
    shown = printable(url if len(url) <= 80 else url[:77] + "...")
    try:
        got = fetch(url, policy or settings.fetch_policy)
    except FetchError as exc:
        return InputItem(shown, error=f"{shown}: {exc}")
    return InputItem(printable(got.name or shown)[:255], data=got.data)
