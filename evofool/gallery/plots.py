"""Gallery plots (matplotlib, Agg, no pyplot state): progress over generations and final confidences.

Confidences are plotted on a logit axis, ``log10(p / (1 - p))``: 10 %, 50 %, 90 %,
99 %, 99.99 % are evenly spaced, so both a weak start and the climb from 99 % to
99.9999 % stay visible.
"""

from __future__ import annotations

import io
import math

import numpy as np

from evofool.gallery.rundata import Champion

LIMIT = 12.0   # |logit10| is capped here (p = 0 or 1 would be infinite)
FACE = "#16181d"
AXES = "#1e2127"
INK = "#dee2e8"
GRID = "#3a3f48"


def logit10(p: np.ndarray | float) -> np.ndarray:
    """``log10(p / (1 - p))``, capped at ±``LIMIT``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 10 ** -LIMIT, 1 - 1e-15)
    return np.clip(np.log10(p) - np.log10(1 - p), -LIMIT, LIMIT)


def logit10_from_log_prob(log_prob: np.ndarray | float) -> np.ndarray:
    """Like ``logit10`` but exact near 1: ``1 - p = -expm1(log p)``."""
    lp = np.minimum(np.asarray(log_prob, dtype=np.float64), -1e-300)
    rest = np.clip(-np.expm1(lp), 10 ** -LIMIT * 1e-3, None)
    return np.clip((lp - np.log(rest)) / math.log(10), -LIMIT, LIMIT)


def percent_label(p: float) -> str:
    """``0.9999`` → ``99.99 %``, ``1e-3`` → ``0.1 %``; past six nines ``1−1e-8``."""
    if p == 0.5:
        return "50 %"
    k = round(-math.log10(1 - p if p > 0.5 else p))
    if k > 6:
        return f"1−1e-{k}" if p > 0.5 else f"1e-{k}"
    value = 100 - 10.0 ** (2 - k) if p > 0.5 else 10.0 ** (2 - k)
    return f"{value:.{max(0, k - 2)}f} %"


def logit_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Ticks at 10^-k, 50 % and 1 - 10^-k between ``lo`` and ``hi`` (logit10 units)."""
    probs = [(10.0 ** -k, k) for k in range(12, 0, -1)] + [(0.5, 0)] + [(1 - 10.0 ** -k, k) for k in range(1, 13)]
    marks = [(float(logit10(p)), p, k) for p, k in probs if lo - 0.01 <= float(logit10(p)) <= hi + 0.01]
    if len(marks) > 7:  # thin out to 50 % and even powers: 1 %, 99 %, 99.99 %...
        marks = [m for m in marks if m[2] % 2 == 0]
    return [m[0] for m in marks], [percent_label(m[1]) for m in marks]


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Axis range covering ``values`` and at least 10 % .. 99 %."""
    return (min(float(np.floor(values.min())), -1.0), max(float(np.ceil(values.max())), 2.0))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # imported here: a run that never plots never pays for it

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


def _png(fig) -> bytes:
    """The figure as PNG bytes (the gallery writes them, as a new file renamed into place)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=FACE, bbox_inches="tight")
    return buf.getvalue()


def progress_plot(log: list[dict], num_classes: int) -> bytes | None:
    """Champion confidence over generations (median, a band, n ≥ 99 % on a second axis).

    The band is the inter-quartile range when records carry ``q1``/``q3`` (or
    ``p25``/``p75``) and the min–max range otherwise.

    Returns:
        The plot as PNG bytes; ``None`` when the log is empty.
    """
    from matplotlib.ticker import MaxNLocator

    records = [r for r in log if all(k in r for k in ("generation", "min", "median", "max"))]
    if not records:
        return None
    gen = np.array([r["generation"] for r in records], dtype=np.float64)
    col = {k: logit10([r[k] for r in records]) for k in ("min", "median", "max")}
    fig, ax = _figure(7.0, 3.4)
    ax.fill_between(gen, col["min"], col["max"], color="#4c8dff", alpha=0.18, linewidth=0, label="min–max")
    q_keys = next(((a, b) for a, b in (("q1", "q3"), ("p25", "p75")) if all(a in r and b in r for r in records)), None)
    if q_keys:
        ax.fill_between(gen, logit10([r[q_keys[0]] for r in records]), logit10([r[q_keys[1]] for r in records]),
                        color="#4c8dff", alpha=0.35, linewidth=0, label="quartiles")
    ax.plot(gen, col["median"], color="#7fb0ff", linewidth=2.0, label="median")
    ax.plot(gen, col["max"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    ax.plot(gen, col["min"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    lo, hi = _limits(np.concatenate(list(col.values())))
    ax.set_yticks(*logit_ticks(lo, hi))
    ax.set_ylim(lo, hi)
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
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("classes", color=INK)
    handles = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=4, fontsize=8, frameon=False, labelcolor=INK)
    ax.set_title("Champion confidence per generation", fontsize=11)
    return _png(fig)


def histogram_plot(champions: list[Champion], num_classes: int) -> bytes:
    """Histogram of the champions' final confidences (logit axis), 99 % and 99.99 % marked, as PNG bytes."""
    from matplotlib.ticker import MaxNLocator

    values = logit10_from_log_prob(np.array([c.log_prob for c in champions]))
    fig, ax = _figure(7.0, 3.4)
    lo, hi = _limits(values)
    bins = np.linspace(lo, hi, int(min(80, max(20, (hi - lo) * 8))) + 1)
    ax.hist(values, bins=bins, color="#7fb0ff", edgecolor=FACE, linewidth=0.5)
    for p, color in ((0.99, "#b5e05e"), (0.9999, "#5ee08a")):
        if lo <= float(logit10(p)) <= hi:
            ax.axvline(float(logit10(p)), color=color, linewidth=1.2, linestyle="--")
    ax.set_xticks(*logit_ticks(lo, hi))
    ax.set_xlim(lo, hi)
    ax.set_xlabel("final champion confidence")
    ax.set_ylabel("classes")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    n99 = sum(c.confidence >= 0.99 for c in champions)
    n9999 = sum(c.confidence >= 0.9999 for c in champions)
    ax.set_title(f"Final confidences: {len(champions)}/{num_classes} classes filled, "
                 f"{n99} ≥ 99 %, {n9999} ≥ 99.99 %", fontsize=11)
    return _png(fig)
