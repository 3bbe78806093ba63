"""One decode for grey and colour: a YCbCr JPEG's Y plane is the grey picture the network sees,
and its colour planes feed the colour check, so preparing a film decodes it once. What a user
would notice if this broke: different pixels for the same film (a changed answer), or a colour
picture passing the colour check."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumo.data.decode import load_grey, load_grey_and_planes
from pneumo.inference.pipeline import COLOUR_CHROMA_LIMIT, _source_chroma, colour_chroma

DRAFT = (260, 260)


def _jpeg(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


def _grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_the_y_plane_is_the_grey_decode_of_real_films(real_data_root):
    """Data-set films are colour-coded JPEGs of grey pictures: one YCbCr decode gives the very
    pixels the grey decode gave, at the same draft scale, and a chroma far below the limit."""
    films = sorted((real_data_root / "train").glob("*/*.jpeg"))[::200]
    assert len(films) >= 10
    for path in films:
        raw = path.read_bytes()
        grey, planes = load_grey_and_planes(raw, draft_size=DRAFT, colour=True)
        assert planes is not None and planes.mode == "YCbCr", path.name
        np.testing.assert_array_equal(_grey(grey), _grey(load_grey(raw, draft_size=DRAFT)))
        assert colour_chroma(planes) < COLOUR_CHROMA_LIMIT / 3


def test_full_size_originals_decode_the_same(originals_dir):
    """Grey-coded JPEGs have no colour planes: the grey decode, scaled as before."""
    path = sorted(originals_dir.rglob("*.jpeg"))[0]
    grey, planes = load_grey_and_planes(path, draft_size=DRAFT, colour=True)
    assert planes is None
    np.testing.assert_array_equal(_grey(grey), _grey(load_grey(path, draft_size=DRAFT)))
    assert min(grey.size) >= DRAFT[0] and max(grey.size) < max(Image.open(path).size)


@pytest.mark.parametrize("hue", [(220, 40, 30), (30, 200, 60), (40, 60, 230)])
def test_colour_pictures_measure_the_same_chroma_from_their_planes(hue):
    """The planes' chroma agrees with the separate colour decode's (within JPEG rounding), so a
    colour picture is flagged either way."""
    rng = np.random.default_rng(0)
    array = np.clip(np.array(hue) + rng.normal(0, 20, (300, 400, 3)), 0, 255).astype(np.uint8)
    raw = _jpeg(array)
    grey, planes = load_grey_and_planes(raw, draft_size=DRAFT, colour=True)
    assert planes is not None
    separate = _source_chroma(raw, "colour.jpeg")
    assert colour_chroma(planes) == pytest.approx(separate, abs=1.0)
    assert separate > COLOUR_CHROMA_LIMIT
    np.testing.assert_array_equal(_grey(grey), _grey(load_grey(raw, draft_size=DRAFT)))


def test_an_rgb_coded_jpeg_falls_back_to_the_grey_decode():
    """libjpeg gives no YCbCr for an RGB-coded file: it is decoded as grey, as before, and its
    colour measured apart, never refused as corrupt."""
    array = np.zeros((200, 240, 3), np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = 220, np.arange(240)[None, :], 30
    raw = _jpeg(array, keep_rgb=True)
    grey, planes = load_grey_and_planes(raw, draft_size=DRAFT, colour=True)
    assert planes is None and grey.mode == "L" and grey.size == (240, 200)
    np.testing.assert_array_equal(_grey(grey), _grey(load_grey(raw, draft_size=DRAFT)))
    assert _source_chroma(raw, "rgb.jpeg") > COLOUR_CHROMA_LIMIT


def test_a_sideways_colour_jpeg_is_turned_upright_in_both():
    """The EXIF orientation turns the grey picture and the planes alike."""
    array = np.zeros((120, 300, 3), np.uint8)
    array[:, :150] = (250, 250, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    raw = _jpeg(array, exif=exif.tobytes())
    grey, planes = load_grey_and_planes(raw, colour=True)
    assert grey.size == planes.size == (120, 300)
    np.testing.assert_array_equal(_grey(grey), _grey(load_grey(raw)))
    assert _grey(grey)[:100].mean() > 200 > _grey(grey)[200:].mean()


def test_a_truncated_colour_jpeg_is_refused_after_one_decode(monkeypatch):
    """Refused as before, and not decoded a second time as grey (which would read no more of
    it): a bad upload costs one decode."""
    import pneumo.data.decode as decode

    calls = []
    real = decode._decoded

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "_decoded", counted)
    raw = _jpeg(np.full((200, 200, 3), (200, 40, 40), np.uint8))
    with pytest.raises(Exception, match="corrupt or truncated"):
        load_grey_and_planes(raw[: len(raw) // 2], colour=True)
    assert len(calls) == 1
