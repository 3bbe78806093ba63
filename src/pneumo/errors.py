"""Exceptions that carry a message meant for the user (the CLI prints them without a trace)."""


class PneumoError(Exception):
    """Base class: something the user can fix, described in plain words."""


class DataError(PneumoError):
    """The data set is missing, empty or laid out differently than expected."""


class ImageDecodeError(PneumoError):
    """One image could not be read; names the file (or upload) and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ModelError(PneumoError):
    """A model file is missing, corrupt, or does not fit the request."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights were asked for but cannot be had here; never silently replaced."""
