"""A headless Chromium, when one is installed: page self-test and screenshots of a gallery.

Nothing here is needed to export a gallery; it checks and pictures one.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from evofool import safefs
from evofool.errors import EvofoolError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--virtual-time-budget=5000")


def find_browser() -> str | None:
    """Path of a Chromium-family browser on ``PATH`` (``/usr/bin/chromium`` on Debian), or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    browser = find_browser()
    if browser is None:
        raise EvofoolError("no Chromium found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="evofool-chromium-") as profile:
        try:
            return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise EvofoolError(f"{browser} did not finish within {timeout:.0f} s") from None


def selftest(index: str | Path, timeout: float = 60) -> dict:
    """Loads ``index.html`` headless; returns what its inline self-test found.

    Returns:
        ``{"images": N, "loaded": N, "pending": N, "rows": N, "broken": [src, ...]}``
        (pending: lazy images outside the window, which never load headless).

    Raises:
        EvofoolError: no browser, or the page did not report (script error, timeout).
    """
    proc = _run(["--dump-dom", Path(index).resolve().as_uri()], timeout)
    match = re.search(r'<pre id="selftest">(.*?)</pre>', proc.stdout, re.S)
    if not match or not match.group(1).strip():
        raise EvofoolError(f"the page's self-test did not run: {proc.stderr.strip()[-300:]}")
    return json.loads(html.unescape(match.group(1)))


def screenshot(index: str | Path, png: str | Path, size: tuple[int, int] = (1200, 900),
               timeout: float = 60) -> Path:
    """Writes a PNG screenshot of ``index.html`` at ``size`` (width, height) px.

    The browser writes into a private temp folder; the picture is then written into place
    by ``safefs.write_bytes_atomic`` (never through a link).

    Raises:
        EvofoolError: no browser, or no screenshot was written.
    """
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory(prefix="evofool-screenshot-") as tmp:
        shot = Path(tmp) / "screenshot.png"
        proc = _run([f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", Path(index).resolve().as_uri()],
                    timeout)
        if not shot.is_file():
            raise EvofoolError(f"no screenshot written: {proc.stderr.strip()[-300:]}")
        safefs.write_bytes_atomic(png, shot.read_bytes(), durable=False)
    return png
