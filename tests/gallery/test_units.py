"""Small pieces of the gallery: formatting, paging, selection, plots' axis labels."""

from __future__ import annotations

import math

import pytest

from evofool.errors import EvofoolError
from evofool.gallery.images import default_scale, enlarged_name, fit_text, font, format_confidence, paginate
from evofool.gallery.plots import logit10, logit10_from_log_prob, logit_ticks, percent_label
from evofool.gallery.rundata import load_run, select


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


def test_percent_labels_and_ticks():
    assert [percent_label(p) for p in (0.5, 0.9, 0.99, 0.9999, 0.01, 0.001, 1 - 1e-8)] == \
        ["50 %", "90 %", "99 %", "99.99 %", "1 %", "0.1 %", "1−1e-8"]
    ticks, labels = logit_ticks(-1, 2)
    assert labels == ["10 %", "50 %", "90 %", "99 %"]
    assert len(logit_ticks(-4, 12)[0]) <= 10
    assert logit10_from_log_prob(math.log(0.9999)) == pytest.approx(logit10(0.9999))
    assert logit10_from_log_prob(-1e-20) == 12.0  # capped, not infinite


def test_select(tmp_path, fake_run):
    run = load_run(fake_run(tmp_path / "r", 20, shape=(1, 8, 8)).path)
    assert [c.index for c in select(run)] == list(range(20))
    assert [c.index for c in select(run, "5, 2,5")] == [5, 2]
    name = run.class_names[7]
    assert [c.index for c in select(run, [name.upper(), "3"])] == [7, 3]
    best = select(run, top=5)
    assert [c.log_prob for c in best] == sorted((c.log_prob for c in run.champions), reverse=True)[:5]
    with pytest.raises(EvofoolError, match="unknown class"):
        select(run, "20")
    with pytest.raises(EvofoolError, match="at least one"):
        select(run, " , ")
