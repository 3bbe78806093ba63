"""Classifying a submission: each image decoded once for its prediction, thumbnail and heatmap,
with the answers the predictor gives for the same files (the API's and the CLI's)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from app_helpers import colour_photo_bytes, xray_bytes
from PIL import Image

import pneumo.app.classify as classify
from pneumo.app.classify import add_heatmaps, classify_images
from pneumo.app.intake import InputItem
from pneumo.app.settings import AppSettings


def _large_jpeg() -> bytes:
    """A film far larger than the model input: decoded at a reduced (draft) scale."""
    grey = Image.open(io.BytesIO(xray_bytes(5))).resize((1200, 1000))
    buf = io.BytesIO()
    grey.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _items() -> list[InputItem]:
    return [
        InputItem("a.png", xray_bytes(1)),
        InputItem("big.jpeg", _large_jpeg()),
        InputItem("cat.png", colour_photo_bytes()),
        InputItem("junk.png", b"not an image"),
        InputItem("refused.png", error="refused.png: file too large"),
    ]


def test_answers_are_the_predictors(predictor):
    items = _items()
    results, pictures = classify_images(items, predictor, AppSettings())
    expected = predictor.predict_sources([i.data for i in items[:4]], [i.name for i in items[:4]])
    for res, exp in zip(results[:3], expected[:3], strict=True):
        assert res.error is None and res.prediction.label == exp.label
        assert res.prediction.probability == pytest.approx(exp.probability, abs=1e-6)
        assert res.prediction.ood == exp.ood
    assert results[2].prediction.ood  # the colour photo: not a chest X-ray
    assert results[3].error == expected[3].error and results[3].prediction is None
    assert results[4].error == "refused.png: file too large"
    assert [p is not None for p in pictures] == [True, True, True, False, False]
    assert max(pictures[1].size) <= classify.THUMBNAIL_SIDE
    assert Image.open(io.BytesIO(results[1].thumbnail)).size == pictures[1].size


def test_each_image_is_decoded_once(predictor, cam, monkeypatch):
    import pneumo.inference.pipeline as pipeline

    calls = []
    real = pipeline.load_grey_and_planes  # the film pipeline's decode is the app's too

    def counting(data, **kwargs):
        calls.append(kwargs.get("name"))
        return real(data, **kwargs)

    monkeypatch.setattr(pipeline, "load_grey_and_planes", counting)
    items = _items()[:2]
    results, pictures = classify_images(items, predictor, AppSettings())
    add_heatmaps(results, pictures, cam, predictor.metadata)
    assert sorted(calls) == ["a.png", "big.jpeg"]
    assert all(r.thumbnail and r.heatmap for r in results)


def test_heatmaps_are_drawn_on_the_decoded_picture(predictor, cam):
    results, pictures = classify_images(_items()[:1], predictor, AppSettings())
    add_heatmaps(results, pictures, cam, predictor.metadata)
    heat = Image.open(io.BytesIO(results[0].heatmap))
    assert heat.size == pictures[0].size and heat.mode == "RGB"
    assert np.asarray(heat).std() > 0


def _chroma(jpeg: bytes) -> float:
    rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32)
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())


def test_a_colour_upload_is_shown_in_its_colours(predictor):
    """Issue 18: a colour photo was shown grey on the page and in the PDF, looking like a film."""
    results, pictures = classify_images(_items()[:3], predictor, AppSettings())
    film, big, cat = results
    red = np.asarray(Image.open(io.BytesIO(cat.thumbnail)).convert("RGB"))[..., 0].mean()
    assert _chroma(cat.thumbnail) > 30 and red > 180  # the photo's strong red, as uploaded
    assert pictures[2].mode == "L"  # heatmaps and the model still see the grey picture
    assert _chroma(film.thumbnail) < 2 and _chroma(big.thumbnail) < 2  # grey films stay grey
