"""`pneumo app --metrics-port`: a real app process on PostgreSQL, driven in Chromium, scraped
as Prometheus would scrape it. The counters follow what the clinician classified, and the
outbox gauge shows the results that wait while the database is down, until they are saved."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from app_helpers import colour_photo_bytes, xray_bytes
from test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _need_browser, _wait_healthy

from processes import stop_group

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "Mabel Metricsworth"


def scrape(url: str) -> dict[str, float]:
    """Every sample of the metrics page, keyed ``name{label="value",...}``, parsed by
    prometheus_client's own parser (so the page is valid text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def wait_for_metric(url: str, name: str, wanted, timeout: float = 90.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(url)
        if wanted(got.get(name)):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{name} is {got.get(name)} after {timeout:.0f} s")
        time.sleep(0.5)


@pytest.mark.timeout(300)
def test_metrics_follow_the_page_and_the_outbox_while_postgres_is_down(
    tiny_model, postgres_server, tmp_path
):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import func, select

    from pneumo.storage.db import open_database
    from pneumo.storage.tables import Record

    db = postgres_server.create_database()
    port, metrics_port = _free_port(), _free_port()
    url, metrics = f"http://localhost:{port}", f"http://localhost:{metrics_port}/metrics"
    files = tmp_path / "films"
    files.mkdir()
    uploads = {"film.png": xray_bytes(5), "holiday.png": colour_photo_bytes(), "notes.png": b"hi"}
    for name, data in uploads.items():
        (files / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_APP_")}
    env["PNEUMO_OUTBOX"] = str(tmp_path / "outbox")
    cmd = [sys.executable, "-m", "pneumo", "app", "--port", str(port), "--db", db]
    cmd += ["--model", str(tiny_model), "--backend", "onnx", "--metrics-port", str(metrics_port)]
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
    )
    try:
        _wait_healthy(url, proc, timeout=90)
        before = scrape(metrics)
        assert before["pneumo_app_outbox_pending_results"] == 0
        assert before["pneumo_app_database_unavailable_total"] == 0
        assert before["pneumo_app_sessions"] == 0
        assert not any(k.startswith("pneumo_app_images_total{") for k in before)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            name = page.get_by_role("textbox", name="Patient name")
            expect(name).to_be_visible(timeout=90_000)
            name.fill(NAME)
            page.locator('input[type="file"]').set_input_files(sorted(files.iterdir()))
            for f in uploads:
                expect(page.get_by_role("button", name=f"Remove {f}")).to_be_visible(timeout=30_000)
            classify = page.get_by_role("button", name="Classify")
            classify.click()
            expect(page.get_by_text("2 of 3 image(s) classified")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("Saved as record")).to_have_count(2, timeout=30_000)

            got = scrape(metrics)
            assert got['pneumo_app_images_total{backend="onnx",precision="fp32"}'] == 2
            assert got["pneumo_app_images_ood_total"] == 1  # the colour photo
            assert got["pneumo_app_images_uncertain_total"] == 1  # the tiny model's wide band
            assert got["pneumo_app_images_unreadable_total"] == 1  # notes.png
            assert got["pneumo_app_sessions"] == 1
            assert got["pneumo_app_outbox_pending_results"] == 0

            postgres_server.stop()
            try:
                classify.click()  # the same three files again, the database down
                expect(page.get_by_text("2 results waiting to be saved")).to_be_visible(
                    timeout=90_000
                )
                got = wait_for_metric(
                    metrics, "pneumo_app_database_unavailable_total", lambda v: v and v >= 1
                )
                assert got["pneumo_app_outbox_pending_results"] == 2
                assert got['pneumo_app_images_total{backend="onnx",precision="fp32"}'] == 4
            finally:
                postgres_server.start()
            # the courier delivers on its own (back-off from 2 s): the gauge drops to 0
            wait_for_metric(metrics, "pneumo_app_outbox_pending_results", lambda v: v == 0)
            browser.close()
        with open_database(db)() as s:
            assert s.scalar(select(func.count()).select_from(Record)) == 4
        log.flush()
        assert NAME not in (tmp_path / "app.log").read_text()
    finally:
        stop_group(proc)
        log.close()


def test_a_bad_metrics_port_stops_the_app_before_it_starts(tiny_model, tmp_path):
    """Refused with the reason before any server starts: the app's own port, or a value out
    of range in the environment."""
    base = [sys.executable, "-m", "pneumo", "app", "--model", str(tiny_model)]
    base += ["--db", str(tmp_path / "r.db"), "--port", "8765"]
    same = subprocess.run(
        [*base, "--metrics-port", "8765"], capture_output=True, text=True, timeout=120
    )
    assert same.returncode == 2
    assert "--metrics-port must differ from --port (8765)" in same.stderr
    env = {**os.environ, "PNEUMO_APP_METRICS_PORT": "nine"}
    bad = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2
    assert "PNEUMO_APP_METRICS_PORT must be a port number, got 'nine'" in bad.stderr
