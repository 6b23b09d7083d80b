"""Gallery plots: the logit axis's labels and ticks, and the plots of both kinds of run."""

from __future__ import annotations

import math

import pytest

from evofool.gallery.plots import logit10, logit10_from_log_prob, logit_ticks, percent_label


def test_percent_labels_and_ticks():
    assert [percent_label(p) for p in (0.5, 0.9, 0.99, 0.9999, 0.01, 0.001, 1 - 1e-8)] == \
        ["50 %", "90 %", "99 %", "99.99 %", "1 %", "0.1 %", "1−1e-8"]
    ticks, labels = logit_ticks(-1, 2)
    assert labels == ["10 %", "50 %", "90 %", "99 %"]
    assert len(logit_ticks(-4, 12)[0]) <= 10
    assert logit10_from_log_prob(math.log(0.9999)) == pytest.approx(logit10(0.9999))
    assert logit10_from_log_prob(-1e-20) == 12.0  # capped, not infinite


def _is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_plots_of_a_unit_run_are_of_activations(unit_run):
    """Activations go on a linear axis, with no 99 % lines or counts (they would be meaningless)."""
    from evofool.gallery.plots import histogram_plot, progress_plot
    from evofool.gallery.rundata import load_run

    run = load_run(unit_run)
    assert _is_png(progress_plot(run.log, run.num_classes, "score"))
    assert _is_png(histogram_plot(run.champions, run.num_classes, "score"))
    assert progress_plot([], run.num_classes, "score") is None
