"""A 1,000-class gallery (synthetic run folder): paged contact sheets, a page that scales."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from evofool.gallery import export_gallery
from evofool.gallery.browser import find_browser, selftest


@pytest.fixture(scope="module")
def big_run(tmp_path_factory, fake_run):
    return fake_run(tmp_path_factory.mktemp("big") / "imagenet-like", 1000, shape=(3, 32, 32)).path


def test_thousand_classes_export_in_pages(big_run):
    start = time.perf_counter()
    result = export_gallery(big_run)
    seconds = time.perf_counter() - start
    assert seconds < 120, seconds  # ~5 s on an idle 2-core machine
    gallery = big_run / "gallery"
    assert result.sheets == [f"contact-sheet-{k:02d}.png" for k in range(1, 11)]
    for name in result.sheets:
        with Image.open(gallery / name) as im:
            assert 1000 <= im.width <= 2000 and 1000 <= im.height <= 2500  # 10 × 10 tiles, legible
    manifest = json.loads((gallery / "manifest.json").read_text())
    assert len(manifest["classes"]) == 1000 and len(list((gallery / "images").glob("*.png"))) == 2000
    assert [s["classes"][0] for s in manifest["contact_sheets"]] == list(range(0, 1000, 100))
    page = (gallery / "index.html").read_text()
    assert page.count("<tr data-class=") == 1000
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "<b>bold</b>" not in page  # names are escaped
    assert "loading=lazy" in page  # 1,000 thumbnails load as they scroll into view


def test_top_k_sheet_is_sorted_by_confidence(big_run, tmp_path):
    result = export_gallery(big_run, tmp_path / "top", top=24)
    assert result.sheets == ["contact-sheet-01.png"]
    manifest = json.loads((tmp_path / "top" / "manifest.json").read_text())
    logps = [e["log_prob"] for e in manifest["classes"]]
    assert len(logps) == 24 and logps == sorted(logps, reverse=True)


@pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH (Debian: apt-get install -y chromium)")
def test_thousand_row_page_renders(big_run):
    if not (big_run / "gallery" / "index.html").exists():
        export_gallery(big_run)
    found = selftest(big_run / "gallery" / "index.html")
    assert found["rows"] == 1000 and found["broken"] == []
    assert found["loaded"] >= 3 and found["loaded"] + found["pending"] == found["images"]
