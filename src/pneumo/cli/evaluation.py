"""`pneumo` subcommands: evaluation."""

from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the `pneumo` parser."""
