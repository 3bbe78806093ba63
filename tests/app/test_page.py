"""The Streamlit page driven by streamlit.testing's AppTest: real script, real tiny model (ONNX
Runtime through the engine), real SQLite database; only the browser is missing."""

from __future__ import annotations

import sqlite3

import pytest
from app_helpers import PAGE, bomb_png, colour_photo_bytes, dicom_bytes, xray_bytes
from streamlit.testing.v1 import AppTest

from pneumo.app.auth import hash_password

pytestmark = pytest.mark.slow


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _field(at, label):
    return next(t for t in at.text_input if t.label == label)


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _images(at) -> int:
    return sum(type(e).__name__ == "Image" for e in at.main)


def _rows(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _classify(at, name="Ada Lovelace", files=None, url="", patient_id=""):
    _field(at, "Patient name").input(name)
    _field(at, "Patient ID").input(patient_id)
    _field(at, "Image URL").input(url)
    if files is not None:
        at.file_uploader[0].set_value(files)
    _button(at, "Classify").click().run()
    assert not at.exception, at.exception
    return at


def test_labels_and_disclaimer_are_on_the_page(app_env):
    at = _page()
    labels = {t.label for t in at.text_input}
    assert {"Patient name", "Patient ID", "Image URL"} <= labels
    assert {"Classify", "New session"} <= {b.label for b in at.button}
    assert len(at.file_uploader) == 1 and at.file_uploader[0].accept_multiple_files
    assert any("Research use only" in w.value for w in at.warning)
    assert any("Kermany" in c.value for c in at.caption)


def test_submit_without_patient_name_is_refused(app_env):
    at = _classify(_page(), name="   ", files=[("a.png", xray_bytes(1), "image/png")])
    assert [e.value for e in at.error] == ["Patient name is required."]
    assert not at.subheader  # nothing classified
    assert _rows(app_env, "select count(*) from records") == [(0,)]


def test_several_files_with_bad_ones_among_them(app_env):
    good = [
        ("first.png", xray_bytes(1), "image/png"),
        ("second.jpeg", xray_bytes(2, fmt="JPEG"), "image/jpeg"),
    ]
    bad = [
        ("notes.jpeg", b"this is not an image", "image/jpeg"),
        ("cut.jpeg", xray_bytes(3, size=200, fmt="JPEG")[:700], "image/jpeg"),
        ("bomb.png", bomb_png(), "image/png"),
    ]
    at = _classify(
        _page(), name="  Ada   Lovelace ", files=[good[0], *bad, good[1]], patient_id="P-1"
    )
    errors = [e.value for e in at.error]
    assert len(errors) == 3
    assert errors[0].startswith("notes.jpeg: not an image")
    assert errors[1].startswith("cut.jpeg:") and "truncated" in errors[1]
    assert errors[2].startswith("bomb.png: image too large")
    titles = [s.value for s in at.subheader]
    assert len(titles) == 2
    assert titles[0].startswith("first.png: ") and titles[1].startswith("second.jpeg: ")
    assert all(t.endswith(("Normal", "Pneumonia")) for t in titles)
    text = " ".join(m.value for m in at.markdown)
    for part in (
        "Confidence:",
        "Normal:",
        "Pneumonia:",
        "Calibrated probability",
        "Operating threshold:** 0.500",
    ):
        assert part in text
    assert any("Uncertain" in w.value for w in at.warning)  # the tiny model's band is wide
    assert _images(at) == 4  # two X-rays, two heatmaps
    rows = _rows(
        app_env,
        "select p.name, p.patient_code, r.file_name, r.prediction, "
        "r.probability, r.threshold, r.model_version, length(r.sha256) "
        "from records r join patients p on p.id = r.patient_id order by r.id",
    )
    assert [r[2] for r in rows] == ["first.png", "second.jpeg"]
    assert {r[:2] for r in rows} == {("Ada Lovelace", "P-1")}  # trimmed
    assert all(r[3] in ("NORMAL", "PNEUMONIA") and 0 <= r[4] <= 1 and r[5] == 0.5 for r in rows)
    assert all(r[6].startswith("test_efficientnet@") and r[7] == 64 for r in rows)
    assert _rows(app_env, "select action, detail from audit") == [
        ("classify", "2 stored, 3 failed")
    ]


def test_dicom_upload(app_env):
    files = [
        ("film.dcm", dicom_bytes(), "application/dicom"),
        ("inverted.dcm", dicom_bytes(photometric="MONOCHROME1"), "application/dicom"),
    ]
    at = _classify(_page(), files=files)
    assert not at.error
    assert [s.value.split(":")[0] for s in at.subheader] == ["film.dcm", "inverted.dcm"]
    assert _images(at) == 4
    assert _rows(app_env, "select count(*) from records") == [(2,)]


def test_file_over_the_size_cap(app_env, monkeypatch):
    monkeypatch.setenv("PNEUMO_MAX_UPLOAD_MB", "0.01")
    big = xray_bytes(5, size=400)  # noise does not compress: well over 10 KiB
    at = _classify(
        _page(),
        files=[("big.png", big, "image/png"), ("small.png", xray_bytes(1, size=32), "image/png")],
    )
    assert [e.value for e in at.error][0].startswith("big.png: file too large")
    assert [s.value.split(":")[0] for s in at.subheader] == ["small.png"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8501/x.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/x.png", "private"),
        ("file:///etc/passwd", "only http:// and https://"),
    ],
)
def test_url_errors_do_not_block_the_uploads(app_env, url, message):
    at = _classify(_page(), files=[("a.png", xray_bytes(1), "image/png")], url=url)
    (error,) = [e.value for e in at.error]
    assert error.startswith(url[:20]) and message in error
    assert [s.value.split(":")[0] for s in at.subheader] == ["a.png"]
    assert _rows(app_env, "select count(*) from records") == [(1,)]


def test_nothing_to_classify(app_env):
    at = _classify(_page(), files=[])
    assert [e.value for e in at.error] == [
        "Add at least one image: upload files or enter an image URL."
    ]


def test_not_a_chest_xray_is_flagged_not_diagnosed(app_env):
    at = _classify(_page(), files=[("cat.png", colour_photo_bytes(), "image/png")])
    assert [s.value for s in at.subheader] == ["cat.png: not diagnosed"]
    assert any("does not look like a chest X-ray" in w.value for w in at.warning)
    assert not any("Confidence" in m.value for m in at.markdown)
    assert _rows(app_env, "select ood from records") == [(1,)]


def test_heatmaps_can_be_switched_off(app_env):
    at = _page()
    at.sidebar.toggle[0].set_value(False)
    at = _classify(at, files=[("a.png", xray_bytes(1), "image/png")])
    assert _images(at) == 1


def test_new_session_clears_uploads_results_and_fields(app_env):
    at = _classify(_page(), files=[("a.png", xray_bytes(1), "image/png")])
    assert at.subheader and at.get("download_button")
    old_key = at.file_uploader[0].key
    _button(at, "New session").click().run()
    assert not at.subheader and not at.get("download_button")
    assert at.file_uploader[0].key != old_key and not at.file_uploader[0].value
    assert _field(at, "Patient name").value == ""
    # Classifying again now has no files: the old upload is really gone.
    _field(at, "Patient name").input("Bob")
    _button(at, "Classify").click().run()
    assert [e.value for e in at.error] == [
        "Add at least one image: upload files or enter an image URL."
    ]


def test_each_browser_session_sees_only_its_own_results(app_env):
    first = _classify(_page(), files=[("a.png", xray_bytes(1), "image/png")])
    second = _page()
    assert first.subheader and not second.subheader
    assert first.session_state["session_id"] != second.session_state["session_id"]


def test_history_per_patient_is_audited(app_env):
    at = _classify(_page(), name="Ada", files=[("a.png", xray_bytes(1), "image/png")])
    _classify(at, name="Bob", files=[("b.png", xray_bytes(2), "image/png")])
    _field(at, "Find patient (name or ID)").input("ada")
    _button(at, "Show history").click().run()
    (table,) = at.dataframe
    assert list(table.value["file"]) == ["a.png"]
    assert any(m.value.startswith("**Ada**") for m in at.markdown)
    assert ("view_history",) in _rows(app_env, "select action from audit")


def test_password_gate(app_env, monkeypatch):
    monkeypatch.setenv("PNEUMO_APP_PASSWORD_HASH", hash_password("s3cret", n=2**10))
    at = _page()
    assert "Patient name" not in {t.label for t in at.text_input}
    assert "Find patient (name or ID)" not in {t.label for t in at.text_input}
    _field(at, "User").input("dr-ada")
    _field(at, "Password").input("wrong")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert "Patient name" not in {t.label for t in at.text_input}
    _field(at, "Password").input("s3cret")
    at.button[0].click().run()
    assert "Patient name" in {t.label for t in at.text_input}
    _classify(at, files=[("a.png", xray_bytes(1), "image/png")])
    assert _rows(app_env, "select user from records") == [("dr-ada",)]
    assert [r[0] for r in _rows(app_env, "select action from audit order by id")] == [
        "login_failed",
        "login",
        "classify",
    ]


def test_password_gate_fails_closed(app_env, monkeypatch, tmp_path):
    """A gate that is configured but cannot be read refuses to serve, saying why."""
    monkeypatch.setenv("PNEUMO_APP_PASSWORD_HASH", "scrypt$16384$8$1$typo")
    at = _page()
    assert not at.text_input  # no patient field, no history search, no sign-in form
    assert any("not a valid hash" in e.value for e in at.error)

    from streamlit import config

    monkeypatch.delenv("PNEUMO_APP_PASSWORD_HASH")
    broken = tmp_path / "secrets.toml"
    broken.write_text('password_hash = "scrypt$1024\n')  # a malformed secrets.toml
    previous = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(broken)])
    try:
        at = AppTest.from_file(PAGE, default_timeout=120)
        at.run()
    finally:
        config.set_option("secrets.files", previous)
    assert not at.text_input
    assert any("cannot be read" in e.value for e in at.error)


def test_torch_backend_gives_the_answers_of_onnx(app_env, monkeypatch):
    """PNEUMO_BACKEND=torch (no ONNX Runtime session): same results, heatmaps still drawn."""
    import streamlit as st

    import pneumo.inference.engine as engine

    files = [("first.png", xray_bytes(1), "image/png"), ("second.png", xray_bytes(2), "image/png")]
    _classify(_page(), files=files)
    backends = []
    real = engine.load_predictor

    def spy(*args, **kwargs):
        predictor = real(*args, **kwargs)
        backends.append(predictor.backend)
        return predictor

    monkeypatch.setattr(engine, "load_predictor", spy)
    monkeypatch.setenv("PNEUMO_BACKEND", "torch")
    st.cache_resource.clear()
    at = _classify(_page(), files=files)
    assert backends == ["torch"]
    assert _images(at) == 4  # two X-rays, two heatmaps
    rows = _rows(app_env, "select file_name, prediction, probability from records order by id")
    onnx_rows, torch_rows = rows[:2], rows[2:]
    assert [r[:2] for r in torch_rows] == [r[:2] for r in onnx_rows]
    assert all(abs(t[2] - o[2]) < 1e-4 for t, o in zip(torch_rows, onnx_rows, strict=True))


def test_openvino_backend_serves_the_page(app_env, monkeypatch):
    """PNEUMO_BACKEND=openvino, accepted by predict and serve, was refused by the page."""
    import streamlit as st

    import pneumo.inference.engine as engine

    real = engine.load_predictor
    backends = []

    def spy(*args, **kwargs):
        predictor = real(*args, **kwargs)
        backends.append(predictor.backend)
        return predictor

    monkeypatch.setattr(engine, "load_predictor", spy)
    monkeypatch.setenv("PNEUMO_BACKEND", "openvino")
    st.cache_resource.clear()
    at = _classify(_page(), files=[("first.png", xray_bytes(1), "image/png")])
    assert backends == ["openvino"]
    assert not at.error
    assert _rows(app_env, "select count(*) from records") == [(1,)]


def test_unknown_backend_is_refused_by_name(app_env, monkeypatch):
    monkeypatch.setenv("PNEUMO_BACKEND", "tensorflow")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception  # a message, not a stack trace
    (error,) = [e.value for e in at.error]
    assert error.startswith("Cannot start: bad app setting") and "'tensorflow'" in error
    assert not at.text_input  # no form to fill in that could not be served


def test_percentages_shown_are_the_stored_probability(app_env):
    """Normal and Pneumonia on the page are 1 - p and p of the record, not swapped."""
    import re

    files = [(f"f{i}.png", xray_bytes(i), "image/png") for i in (1, 2, 3)]
    at = _classify(_page(), files=files)
    stored = dict(_rows(app_env, "select file_name, probability from records"))
    shown = {}
    for m in at.markdown:
        got = re.search(r"\*\*Normal:\*\* ([\d.]+)% · \*\*Pneumonia:\*\* ([\d.]+)%", m.value)
        if got:
            shown[len(shown)] = (float(got[1]), float(got[2]))
    assert len(shown) == 3
    for i, (normal, pneumonia) in shown.items():
        p = stored[f"f{i + 1}.png"]
        assert pneumonia == round(100 * p, 1) and normal == round(100 * (1 - p), 1)
    assert any(abs(n - p) > 0.1 for n, p in shown.values())  # a swap would show


def test_a_long_file_name_never_breaks_mid_word_in_its_heading(app_env):
    name = "scan_" + "0123456789" * 12 + ".png"
    at = _classify(_page(), files=[(name, xray_bytes(1), "image/png")])
    (heading,) = [s.value for s in at.subheader]
    assert max(len(word) for word in heading.split()) <= 41  # the name and its colon
    assert heading.startswith("scan_0123") and ".png:" in heading
    assert _rows(app_env, "select file_name from records") == [(name,)]  # stored whole
