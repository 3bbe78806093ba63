"""Reading ``PNEUMO_*`` settings from the environment, one way for the app and the API: a blank
variable means "not set", and a value that cannot be read is a PneumoError naming the variable."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from pneumo.errors import PneumoError

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class EnvReader:
    """Typed look-ups in ``env`` (``os.environ`` when None), each with the default it falls back
    to when the variable is unset or blank."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env

    def text(self, name: str, default: str | None = None) -> str | None:
        """The value without surrounding whitespace, or ``default``."""
        return self.env.get(name, "").strip() or default

    def number(self, name: str, kind: Callable[[str], T], default: T) -> T:
        """The value as ``kind`` (int or float), or ``default``."""
        value = self.text(name)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            raise PneumoError(f"{name} must be a number, got {value!r}") from None
        except OverflowError:
            raise PneumoError(f"{name} is out of range: {value!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        """1/true/yes/on or 0/false/no/off (any case), or ``default``."""
        value = (self.text(name) or "").lower()
        if not value:
            return default
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise PneumoError(f"{name} must be 1 or 0 (true or false), got {value!r}")
