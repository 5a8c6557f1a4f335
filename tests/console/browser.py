"""A real headless Chromium for the console's browser tests: Debian's ``chromium`` driven through its own
``chromium-driver`` by selenium (matching versions, nothing downloaded). ``make browser`` installs both
(apt, as root); without them the browser tests are skipped with that instruction."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

MISSING = (
    "the console's browser tests need Debian's chromium and chromium-driver: run `make browser` "
    "(as root: apt-get update && apt-get install -y chromium chromium-driver); missing: {missing}"
)


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_paths() -> tuple[str, str]:
    """(browser, driver), or skip the test saying what is missing."""
    browser = os.environ.get("PARLEY_CHROMIUM") or _find("chromium", "chromium-browser")
    driver = os.environ.get("PARLEY_CHROMEDRIVER") or _find("chromedriver")
    if not driver and Path("/usr/lib/chromium/chromedriver").exists():
        driver = "/usr/lib/chromium/chromedriver"
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    if missing:
        pytest.skip(MISSING.format(missing=", ".join(missing)))
    assert browser and driver
    return browser, driver


def start_chromium() -> Any:
    """A headless Chromium session (blocking: call it in a thread)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1600",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
