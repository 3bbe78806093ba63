"""`POST /v1/predict?heatmap=true`: an overlay of the network's own class activation map per
diagnosed film, bounded in size, none for films without a diagnosis."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def _files(*items):
    return [("files", item) for item in items]


def test_heatmap_on_request_for_diagnosed_films_only(client, api_predictor, make_jpeg):
    from pneumo.data.decode import load_grey
    from pneumo.inference.cam import overlay_png

    film, large = make_jpeg(3, 1, size=96), make_jpeg(4, 0, size=900)
    photo = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(photo, "JPEG")
    sent = _files(
        ("a.jpeg", film, "image/jpeg"),
        ("bad.jpeg", b"not an image", "image/jpeg"),
        ("photo.jpeg", photo.getvalue(), "image/jpeg"),
        ("big.jpeg", large, "image/jpeg"),
    )
    plain = client.post("/v1/predict", files=sent)
    assert plain.status_code == 200 and "heatmap_png" not in plain.json()["results"][0]

    r = client.post("/v1/predict", params={"heatmap": "true"}, files=sent)
    assert r.status_code == 200, r.text
    a, bad, ood, big = r.json()["results"]
    assert bad["error"] and bad["heatmap_png"] is None
    assert ood["ood"] and ood["heatmap_png"] is None
    assert a["label"] is not None and big["label"] is not None
    # the answer is the overlay of the predictor's own map, at most 512 pixels a side
    img = load_grey(film)
    target = api_predictor.metadata.class_names.index(a["label"])
    expected = overlay_png(img, api_predictor.heatmaps([img], [target])[0], max_side=512)
    assert base64.b64decode(a["heatmap_png"]) == expected
    shown = Image.open(io.BytesIO(base64.b64decode(big["heatmap_png"])))
    assert shown.format == "PNG" and max(shown.size) == 512 and shown.mode == "RGB"
    assert a.items() >= {k: v for k, v in plain.json()["results"][0].items()}.items()


def test_heatmap_on_a_request_with_no_readable_film_is_still_422(client):
    r = client.post(
        "/v1/predict", params={"heatmap": "true"}, files=_files(("x.jpeg", b"xx", "image/jpeg"))
    )
    assert r.status_code == 422 and r.json()["results"][0]["heatmap_png"] is None
