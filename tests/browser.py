"""Headless Chromium for the report's browser tests (scripts/install_browser.sh installs it, chromedriver and
selenium); `chromium()` skips the test when any of them is missing. `save_screenshot` keeps a full-page PNG."""
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def chromium():
    """A headless Chromium driver with no network traffic of its own; the test is skipped without one."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (scripts/install_browser.sh)")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("no Chromium/chromedriver installed (scripts/install_browser.sh)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='pyro-dps-chromium-')}"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def save_screenshot(driver, path: Path) -> Path:
    """A full-page screenshot (the window grown to the page's height, at most 16000 px) saved at `path`;
    asserts that the PNG exists and is not blank (more than one distinct colour)."""
    from PIL import Image

    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 100, 16000))
    assert driver.save_screenshot(str(path))
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 1000
        assert image.convert("RGB").getcolors(maxcolors=1) is None, f"{path} is blank (one colour)"
    return path


def browser_errors(driver) -> list:
    """The console messages of level SEVERE/ERROR the page produced."""
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
