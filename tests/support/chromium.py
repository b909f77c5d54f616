"""Headless Chromium for tests that look at a page: Debian's ``chromium`` package.

Missing Chromium skips the test, unless ``SWITCHBOARD_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``,
which also installs it) makes that a failure, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

REQUIRE_ENV = "SWITCHBOARD_REQUIRE_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def require_chromium() -> str:
    """The Chromium executable; skips (or, in CI, fails) the test when there is none."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    reason = "Chromium not found: install it with `apt-get install -y chromium`"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this an error)")
    pytest.skip(reason)


def screenshot(html: Path, png: Path, *, width: int = 1200, height: int = 1600) -> Path:
    """Render ``html`` (a file, offline) to ``png`` at ``width`` x ``height``."""
    browser = require_chromium()
    profile = png.parent / f"{png.stem}-profile"
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert png.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr}"
    return png


def png_size(png: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height
