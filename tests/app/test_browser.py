"""End to end in a real headless Chromium: `pneumo app` on a free port with a temp SQLite
database, five full-size X-rays uploaded, "Classify" clicked, results checked on the page and
in the database, a screenshot saved."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from processes import stop_group

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.realdata]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
REPO = Path(__file__).resolve().parents[2]


def _need_browser():
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed"
    if reason:
        if os.environ.get("PNEUMO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PNEUMO_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pneumo app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"pneumo app did not answer within {timeout} s")


@pytest.fixture
def model_for_browser() -> Path:
    """$PNEUMO_MODEL or the bundled model: the real backbone and real numbers, prepared for
    this machine first (OpenVINO IR and the accuracy guard over the validation films take
    minutes on 2 busy cores: the app's start-up must not be timed with them). A missing model
    fails the test rather than quietly testing a random one."""
    from pneumo.errors import ModelError
    from pneumo.inference.engine import prepare_model
    from pneumo.models.checkpoint import resolve_model_dir

    try:
        model = resolve_model_dir(None).resolve()
    except ModelError as exc:
        pytest.fail(f"the browser test needs the bundled model: {exc}")
    prepare_model(model)
    return model


@pytest.mark.timeout(600)
def test_classify_five_originals_in_chromium(originals_dir, model_for_browser, tmp_path):
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    files = sorted((originals_dir / "NORMAL").glob("*.jpeg"))[:3]
    files += sorted((originals_dir / "PNEUMONIA").glob("*.jpeg"))[:2]
    assert len(files) == 5
    db = tmp_path / "browser.db"
    port = _free_port()
    url = f"http://localhost:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_APP_PASSWORD")}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from pneumo.cli import main; sys.exit(main())",
        "app",
        "--port",
        str(port),
        "--db",
        str(db),
        "--model",
        str(model_for_browser),
    ]
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
    )
    try:
        _wait_healthy(url, proc, timeout=90)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            name = page.get_by_role("textbox", name="Patient name")
            expect(name).to_be_visible(timeout=90_000)  # first view loads the model
            name.fill("Test Patient Browser")
            page.get_by_role("textbox", name="Patient ID").fill("E2E-5")
            page.locator('input[type="file"]').set_input_files([str(f) for f in files])
            for f in files:
                remove = page.get_by_role("button", name=f"Remove {f.name}")
                expect(remove).to_be_visible(timeout=30_000)  # uploaded to the server
            start = time.perf_counter()
            page.get_by_role("button", name="Classify").click()
            for f in files:  # every image's heading, in page order (the last one ends the clock)
                expected = "Normal" if f.parent.name == "NORMAL" else "Pneumonia"
                heading = page.get_by_role(
                    "heading", name=re.compile(re.escape(f.name) + f": {expected}$")
                )
                expect(heading).to_be_visible(timeout=90_000)
            seconds = time.perf_counter() - start
            caption = page.get_by_text("5 of 5 image(s) classified")
            expect(caption).to_be_visible()
            # a heading can be drawn before the numbers under it: wait for all five
            expect(page.get_by_text("Operating threshold")).to_have_count(5, timeout=30_000)
            # ...and the heatmaps, whose images can arrive after the text beside them
            expect(
                page.get_by_text("Class activation map: regions behind the result")
            ).to_have_count(5, timeout=60_000)
            server = re.search(r"classified in ([0-9.]+) s", caption.inner_text()).group(1)
            print(
                f"\nClassify -> results for 5 full-size images: {seconds:.2f} s in the browser, "
                f"{server} s of it on the server (model {model_for_browser.name})"
            )
            body = page.inner_text("body")
            # Every image diagnosed with its operating point and a real class activation map overlay.
            assert body.count("Operating threshold") == 5
            assert body.count("Class activation map: regions behind the result") == 5
            assert "not diagnosed" not in body
            assert "Research use only" in body and "Kermany" in body
            # never into docs/: these are films of the data set (docs/make_screenshots.py draws its own)
            shot = tmp_path / "screenshot-results.png"
            results = page.get_by_text("Results for Test Patient Browser")
            results.evaluate("e => e.scrollIntoView({block: 'start'})")  # the results, on top
            page.wait_for_timeout(300)
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            pdf_button = page.get_by_role("button", name="Download PDF report")
            with page.expect_download(timeout=60_000) as download:
                pdf_button.click()
            pdf = Path(download.value.path()).read_bytes()
            assert pdf.startswith(b"%PDF") and pdf.count(b"/Subtype /Image") >= 5

            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name="Download CSV").click()
            assert download.value.suggested_filename == "pneumo-results.csv"
            text = Path(download.value.path()).read_text(encoding="utf-8-sig")
            table = list(csv.DictReader(io.StringIO(text)))
            browser.close()
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "select p.name, p.patient_code, r.file_name, r.prediction, r.probability "
                "from records r join patients p on p.id = r.patient_id order by r.id"
            ).fetchall()
        assert sorted(r[2] for r in rows) == sorted(f.name for f in files)
        assert {r[:2] for r in rows} == {("Test Patient Browser", "E2E-5")}
        assert all(r[3] in ("NORMAL", "PNEUMONIA") and 0.0 <= r[4] <= 1.0 for r in rows)
        audit = [r[0] for r in conn.execute("select action from audit order by id")]
        assert audit == ["classify", "export", "export"]
        # The CSV holds the same five results as the page and the database.
        by_file = {r["file"]: r for r in table}
        assert sorted(by_file) == sorted(f.name for f in files)
        for f in files:
            row = by_file[f.name]
            assert row["result"] == ("Normal" if f.parent.name == "NORMAL" else "Pneumonia")
            assert (row["patient_name"], row["patient_id"]) == ("Test Patient Browser", "E2E-5")
        stored = {r[2]: r[4] for r in rows}
        assert all(abs(float(by_file[n]["p_pneumonia"]) - p) < 1e-3 for n, p in stored.items())
        log.flush()
        assert "Test Patient Browser" not in (tmp_path / "app.log").read_text()  # never logged
    finally:
        stop_group(proc)
        log.close()
