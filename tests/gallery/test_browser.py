"""index.html in a real headless Chromium: every image loads, one row per class, a screenshot."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from evofool.gallery.browser import find_browser, screenshot, selftest

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="no Chromium on PATH (Debian: apt-get install -y chromium)")


def test_page_loads_every_image_and_lists_every_class(mnist_gallery):
    gallery, proc = mnist_gallery
    assert proc.returncode == 0, proc.stderr
    start = time.perf_counter()
    found = selftest(gallery / "index.html")
    assert found["rows"] == 10
    assert found["images"] >= 10 + 2  # 10 champions + 2 plots
    assert found["loaded"] == found["images"] and found["pending"] == 0, found["broken"]

    shot = screenshot(gallery / "index.html", gallery / "screenshot.png", size=(1200, 900))
    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # a rendered page, not a blank one
    assert time.perf_counter() - start < 60


def test_page_of_a_selection_and_a_broken_link(mnist_run, tmp_path):
    from evofool.gallery import export_gallery

    out = tmp_path / "g"
    export_gallery(mnist_run, out, classes="2,5")
    assert selftest(out / "index.html")["rows"] == 2
    (out / "images" / "0005-5.png").unlink()
    found = selftest(out / "index.html")
    assert found["loaded"] == found["images"] - 1 and found["broken"] == ["images/0005-5.png"]
