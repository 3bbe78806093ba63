"""Redo docs/screenshot-results.png: `pneumo app` with the bundled model on a temporary
database, driven in headless Chromium (Playwright), classifying generated films.

No picture from the Kermany data set (nor any other patient's film) may go into the repository,
so the films are drawn here: a grey, chest-shaped gradient with noise, and one colour picture.
The bundled model's out-of-distribution check flags drawn films "not diagnosed", and the
screenshot shows exactly that: the layout of the results page, honestly.

    python docs/make_screenshots.py [--backend onnx] [--out docs/screenshot-results.png]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("make_screenshots")

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PATIENT = "Test Patient (drawn films)"


def drawn_film(seed: int, side: int = 640) -> bytes:
    """A grey PNG shaped like a frontal chest film: dark lungs either side of a bright
    mediastinum, a bright border, noise. Drawn, so no patient's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    lungs = np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    lungs += np.exp(-(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    img = 200 - 130 * lungs + 25 * np.exp(-(((xx - 0.5) / 0.06) ** 2))
    img += rng.normal(0, 8, (side, side))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def colour_picture(side: int = 480) -> bytes:
    """A colourful picture: what a clinician might upload by mistake."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    arr = np.stack([200 * xx + 40, 180 * (1 - yy) + 30, 120 + 100 * xx * yy], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pneumo app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"pneumo app did not answer within {timeout:.0f} s")


def screenshot_results(out: Path, backend: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="pneumo-shots-") as tmp:
        root = Path(tmp)
        files = []
        for i in range(2):
            files.append(root / f"drawn-film-{i + 1}.png")
            files[-1].write_bytes(drawn_film(i))
        files.append(root / "holiday-photo.png")
        files[-1].write_bytes(colour_picture())
        port = free_port()
        url = f"http://localhost:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PNEUMO_APP_")}
        env["PNEUMO_OUTBOX"] = str(root / "outbox")
        cmd = [sys.executable, "-m", "pneumo", "app", "--port", str(port)]
        cmd += ["--db", str(root / "shots.db"), "--backend", backend]
        with open(root / "app.log", "w") as app_log:
            proc = subprocess.Popen(cmd, env=env, stdout=app_log, stderr=subprocess.STDOUT)
            try:
                wait_healthy(url, proc)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(
                        executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
                    )
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(url)
                    name = page.get_by_role("textbox", name="Patient name")
                    expect(name).to_be_visible(timeout=300_000)
                    name.fill(PATIENT)
                    page.get_by_role("textbox", name="Patient ID").fill("DEMO-1")
                    page.locator('input[type="file"]').set_input_files([str(f) for f in files])
                    for f in files:
                        expect(page.get_by_role("button", name=f"Remove {f.name}")).to_be_visible(
                            timeout=60_000
                        )
                    page.get_by_role("button", name="Classify").click()
                    expect(page.get_by_text(f"of {len(files)} image(s) classified")).to_be_visible(
                        timeout=300_000
                    )
                    expect(page.get_by_text("Saved as record")).to_have_count(
                        len(files), timeout=60_000
                    )
                    results = page.get_by_text(f"Results for {PATIENT}")
                    results.evaluate("e => e.scrollIntoView({block: 'start'})")
                    page.wait_for_timeout(500)
                    page.screenshot(path=str(out))
                    browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    log.info("wrote %s", out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", help="as for `pneumo app` (default auto)")
    parser.add_argument("--out", type=Path, default=DOCS / "screenshot-results.png")
    args = parser.parse_args()
    screenshot_results(args.out, args.backend)


if __name__ == "__main__":
    main()
