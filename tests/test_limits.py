"""One set of size limits: the CLI, the app, its URL fetch and the API start from the same
numbers (they once disagreed: 60 M pixels per image in the decoder, 40 M in the API)."""

from __future__ import annotations

import pytest

from pneumo import limits
from pneumo.api.settings import ApiSettings
from pneumo.app.fetch import FetchPolicy
from pneumo.app.settings import AppSettings
from pneumo.cli import build_parser
from pneumo.data import decode


def test_every_face_starts_from_the_same_limits():
    api, app = ApiSettings.from_env({}), AppSettings.from_env({})
    assert api.max_upload_mb == app.max_upload_mb == limits.MAX_UPLOAD_MIB == 20
    assert api.max_upload_bytes == app.max_bytes == FetchPolicy().max_bytes == 20 * 2**20
    assert api.max_pixels == app.max_pixels == decode.MAX_PIXELS == 40_000_000
    assert api.max_request_pixels >= api.max_pixels
    assert api.decode_budget_mb * 2**20 == decode.decode_budget.limit == 1536 * 2**20
    app_cli = build_parser().parse_args(["app"])
    assert app_cli.max_upload_mb == limits.MAX_UPLOAD_MIB


def test_pneumo_predict_and_the_app_refuse_the_bomb_the_api_refuses():
    """A 6400x6400 16-bit PNG (41 M pixels in a few KiB) passed the decoder's old 60 M limit
    while the API refused it; now the decoder's default refuses it from the header too."""
    from corpus import png_16bit_big
    from pneumo.errors import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="image too large"):
        decode.load_grey(png_16bit_big(6400), name="bomb.png")
