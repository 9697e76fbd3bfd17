"""Render an HTML report in headless Chromium: for the report test and
benchmarks/report_screenshot.py, not part of the library."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def find_browser() -> str | None:
    """A headless-capable Chromium on this machine (Debian's ``chromium`` package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(page: str | Path, png: str | Path, *, width: int = 1200, height: int = 1400,
               browser: str | None = None) -> Path:  # fmt: skip
    """Render an HTML page in headless Chromium and save what it shows as a PNG."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no headless browser found; install Debian's chromium package")
    png = Path(png)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
           Path(page).resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return png
