"""The API gives no diagnosis for a film flagged out of distribution (issue 18)."""

from __future__ import annotations

import io

from synthetic import colour_photo


def _colour_png() -> bytes:
    buf = io.BytesIO()
    colour_photo().save(buf, format="PNG")
    return buf.getvalue()


def test_an_ood_upload_gets_no_label_and_no_probability(client, xray_jpeg):
    files = [
        ("files", ("film.jpeg", xray_jpeg, "image/jpeg")),
        ("files", ("chelsea_cat.png", _colour_png(), "image/png")),
    ]
    r = client.post("/v1/predict", files=files)
    assert r.status_code == 200
    film, cat = r.json()["results"]
    assert cat["ood"] is True and cat["error"] is None
    assert (cat["label"], cat["probability"], cat["confidence"]) == (None, None, None)
    assert film["label"] in ("NORMAL", "PNEUMONIA") and film.get("ood_reason") is None
    assert cat["uncertain"] is False
    assert cat["ood_reason"].startswith("not assessed: a colour image")
    assert "model_probability" not in cat
