"""Gallery images: formatting, enlargement names, paging, captions."""

from __future__ import annotations

import pytest

from evofool.gallery.images import (default_scale, enlarged_name, fit_text, font, format_confidence, paginate,
                                    value_caption, value_text)
from evofool.gallery.rundata import Champion


@pytest.mark.parametrize("p, text", [(0.1234, "12.34 %"), (0.99, "99.00 %"), (0.99991, "99.9910 %"),
                                     (0.9999996, ">99.9999 %"), (1.0, "100 %")])
def test_format_confidence(p, text):
    assert format_confidence(p) == text


def test_default_scale_and_names():
    assert default_scale(28, 28) == 8 and default_scale(32, 32) == 7 and default_scale(224, 224) == 1
    assert enlarged_name("0003-three.png", 8) == "0003-three-x8.png"


@pytest.mark.parametrize("n, sizes", [(10, [10]), (100, [100]), (101, [51, 50]), (150, [75, 75]),
                                      (1000, [100] * 10), (0, [0])])
def test_paginate(n, sizes):
    pages = paginate(n)
    assert [len(p) for p in pages] == sizes
    assert [i for p in pages for i in p] == list(range(n))


def test_fit_text_cuts_with_an_ellipsis():
    f = font(15)
    assert fit_text("short", f, 200) == "short"
    cut = fit_text("a very long class name that does not fit", f, 100)
    assert cut.endswith("…") and f.getlength(cut) <= 100


def test_fit_text_draws_control_characters_as_spaces():
    """A class name with a newline (a sidecar may hold one) is one line: Pillow's layout of
    it failed ("raqm_layout() failed") and took the export down."""
    fnt = font(13)
    assert fit_text("a\nb\tc\x00", fnt, 500) == "a b c "
    assert "\n" not in fit_text("long name\n" * 20, fnt, 80) and fit_text("long name\n" * 20, fnt, 80).endswith("…")


def test_a_champion_s_value_reads_as_a_confidence_or_an_activation(tmp_path):
    common = {"index": 3, "name": "three", "generation": 5, "source": tmp_path / "x.png", "file": "x.png"}
    digit = Champion(fitness=-1e-5, confidence=0.99999, **common)
    unit = Champion(fitness=12.3456, confidence=None, **common)
    assert value_text(digit) == value_caption(digit) == "99.9990 %"
    assert value_text(unit) == "12.35" and value_caption(unit) == "activation 12.35"
    assert unit.values() == {"activation": 12.3456}
    assert digit.values() == {"confidence": 0.99999, "log_prob": -1e-5}
