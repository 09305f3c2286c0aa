"""The page at / in headless Chromium (Debian's, driven by Playwright): choose an image, see the overlay and the
decision."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from mala.deploy.calibration import ALL, Calibration, Thresholds
from mala.deploy.graph import export_onnx, store_calibration
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model
from mala.deploy.serve import running_server

CHROMIUM = "/usr/bin/chromium"
# No background networking: this machine's closed network would refuse those connections by the dozen.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def calibrated_model(folder: Path) -> Path:
    checkpoint = save_random_model(folder / "model.safetensors", ["magnetic_tile"])
    thresholds = Thresholds(0.0, 0.5, 0.0, 1.0, 0.0, 1.0, "F1-max", "F1-max over pixels", 1)  # every image anomalous
    store_calibration(checkpoint, Calibration({ALL: thresholds}, "mala calibrate"))
    return export_onnx(checkpoint, folder / "model.onnx")


def test_a_chosen_image_shows_its_overlay_and_decision(tmp_path):
    assert shutil.which(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    image = sorted(shared_data("magnetic_tile", "test", "crack").glob("*.jpg"))[0]
    with running_server(calibrated_model(tmp_path)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#model")).to_contain_text("onnxruntime, 64 px, with thresholds")
            page.set_input_files("#file", str(image))
            overlay = page.locator("#overlay")
            expect(overlay).to_be_visible(timeout=60_000)
            assert overlay.get_attribute("src").startswith("data:image/png;base64,")
            assert page.evaluate("document.getElementById('overlay').naturalWidth") > 0  # the PNG decoded
            expect(page.locator("#decision")).to_have_text("anomalous")
            expect(page.locator("#details")).to_contain_text("threshold 0.5")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
