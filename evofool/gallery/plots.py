"""Gallery plots (matplotlib, Agg, no pyplot state): progress over generations and final confidences.

Confidences near 1 are plotted as "nines", ``-log10(1 - p)``: 1 = 90 %, 2 = 99 %,
4 = 99.99 %, so that the climb from 99 % to 99.9999 % stays visible.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from evofool.gallery.rundata import Champion

MAX_NINES = 12.0
FACE = "#16181d"
AXES = "#1e2127"
INK = "#dee2e8"
GRID = "#3a3f48"


def nines(p: np.ndarray | float) -> np.ndarray:
    """``-log10(1 - p)``, capped at ``MAX_NINES`` (p = 1 would be infinite)."""
    p = np.asarray(p, dtype=np.float64)
    return np.minimum(-np.log10(np.clip(1.0 - p, 10 ** -MAX_NINES, None)), MAX_NINES)


def nines_from_log_prob(log_prob: np.ndarray) -> np.ndarray:
    """Like ``nines`` but exact near 1: ``1 - p = -expm1(log p)``."""
    rest = -np.expm1(np.asarray(log_prob, dtype=np.float64))
    return np.minimum(-np.log10(np.clip(rest, 10 ** -MAX_NINES, None)), MAX_NINES)


def nines_label(t: int) -> str:
    """The confidence ``t`` nines stand for: 0 → ``0 %``, 1 → ``90 %``, 4 → ``99.99 %``."""
    if t <= 0:
        return "0 %"
    if t == 1:
        return "90 %"
    return "99" + ("." + "9" * (t - 2) if t > 2 else "") + " %"


def _nines_ticks(top: float) -> tuple[list[int], list[str]]:
    last = max(2, math.ceil(top))
    step = 1 if last <= 8 else 2
    ticks = list(range(0, last + 1, step))
    if ticks[-1] < last:
        ticks.append(ticks[-1] + step)
    return ticks, [nines_label(t) for t in ticks]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, facecolor=FACE)
    ax = fig.add_subplot(1, 1, 1, facecolor=AXES)
    _style(ax)
    return fig, ax


def _style(ax) -> None:
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=INK, labelsize=9)
    ax.xaxis.label.set_color(INK)
    ax.yaxis.label.set_color(INK)
    ax.title.set_color(INK)
    ax.grid(True, color=GRID, linewidth=0.6, alpha=0.8)


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png", facecolor=FACE, bbox_inches="tight")
    os.replace(tmp, path)


def progress_plot(log: list[dict], num_classes: int, path: Path) -> bool:
    """Champion confidence over generations (median, a band, n ≥ 99 % on a second axis).

    The band is the inter-quartile range when records carry ``q1``/``q3`` (or
    ``p25``/``p75``) and the min–max range otherwise.

    Returns:
        False (and writes nothing) when the log is empty.
    """
    records = [r for r in log if all(k in r for k in ("generation", "min", "median", "max"))]
    if not records:
        return False
    gen = np.array([r["generation"] for r in records], dtype=np.float64)
    col = {k: nines([r[k] for r in records]) for k in ("min", "median", "max")}
    fig, ax = _figure(8.0, 4.2)
    ax.fill_between(gen, col["min"], col["max"], color="#4c8dff", alpha=0.18, linewidth=0, label="min–max")
    q_keys = next(((a, b) for a, b in (("q1", "q3"), ("p25", "p75")) if all(a in r and b in r for r in records)), None)
    if q_keys:
        ax.fill_between(gen, nines([r[q_keys[0]] for r in records]), nines([r[q_keys[1]] for r in records]),
                        color="#4c8dff", alpha=0.35, linewidth=0, label="quartiles")
    ax.plot(gen, col["median"], color="#7fb0ff", linewidth=2.0, label="median")
    ax.plot(gen, col["max"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    ax.plot(gen, col["min"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    ticks, labels = _nines_ticks(float(col["max"].max()))
    ax.set_yticks(ticks, labels)
    ax.set_ylim(0, ticks[-1])
    ax.set_xlim(gen.min(), max(gen.max(), gen.min() + 1))
    ax.set_xlabel("generation")
    ax.set_ylabel("champion confidence over classes")
    right = ax.twinx()
    _style(right)
    right.grid(False)
    for key, color, name in (("n99", "#b5e05e", "classes ≥ 99 %"), ("n9999", "#5ee08a", "classes ≥ 99.99 %")):
        if all(key in r for r in records):
            right.step(gen, [r[key] for r in records], where="post", color=color, linewidth=1.6, label=name)
    right.set_ylim(0, num_classes * 1.02)
    right.set_ylabel("classes", color=INK)
    handles = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    legend = ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", fontsize=8,
                       facecolor=AXES, edgecolor=GRID, labelcolor=INK)
    legend.set_zorder(5)
    ax.set_title("Champion confidence per generation", fontsize=11)
    _save(fig, path)
    return True


def histogram_plot(champions: list[Champion], num_classes: int, path: Path) -> None:
    """Histogram of the champions' final confidences, in nines, with 99 % and 99.99 % marked."""
    values = nines_from_log_prob(np.array([c.log_prob for c in champions]))
    fig, ax = _figure(8.0, 3.4)
    top = max(2.0, float(values.max()))
    bins = np.linspace(0, math.ceil(top), int(max(10, min(60, math.ceil(top) * 8))) + 1)
    ax.hist(values, bins=bins, color="#7fb0ff", edgecolor=FACE, linewidth=0.5)
    for level, color in ((2, "#b5e05e"), (4, "#5ee08a")):
        ax.axvline(level, color=color, linewidth=1.2, linestyle="--")
    ticks, labels = _nines_ticks(top)
    ax.set_xticks(ticks, labels)
    ax.set_xlim(0, ticks[-1])
    ax.set_xlabel("final champion confidence")
    ax.set_ylabel("classes")
    n99 = int(np.sum(values >= 2))
    ax.set_title(f"Final confidences: {len(champions)} of {num_classes} classes filled, "
                 f"{n99} ≥ 99 %", fontsize=11)
    _save(fig, path)
