"""Gallery plots (matplotlib, Agg, no pyplot state): progress over generations and final values.

Confidences are plotted on a logit axis, ``log10(p / (1 - p))``: 10 %, 50 %, 90 %,
99 %, 99.99 % are evenly spaced, so both a weak start and the climb from 99 % to
99.9999 % stay visible. A unit run's activations are plain numbers, on a linear axis.
"""

from __future__ import annotations

import io
import math

import numpy as np

from evofool.gallery.rundata import Champion
from evofool.models.outputs import LOG_PROB

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


def progress_plot(log: list[dict], num_classes: int, fitness_kind: str = LOG_PROB) -> bytes | None:
    """Champions over generations: median, a band, and for confidences the classes ≥ 99 %
    on a second axis (a unit run's records hold activations: linear axis, no counts).

    The band is the inter-quartile range when records carry ``q1``/``q3`` (or
    ``p25``/``p75``) and the min–max range otherwise.

    Returns:
        The plot as PNG bytes; ``None`` when the log is empty.
    """
    records = [r for r in log if all(k in r for k in ("generation", "min", "median", "max"))]
    if not records:
        return None
    probability = fitness_kind == LOG_PROB
    scale = logit10 if probability else (lambda values: np.asarray(values, dtype=np.float64))
    gen = np.array([r["generation"] for r in records], dtype=np.float64)
    col = {k: scale([r[k] for r in records]) for k in ("min", "median", "max")}
    fig, ax = _figure(7.0, 3.4)
    ax.fill_between(gen, col["min"], col["max"], color="#4c8dff", alpha=0.18, linewidth=0, label="min–max")
    q_keys = next(((a, b) for a, b in (("q1", "q3"), ("p25", "p75")) if all(a in r and b in r for r in records)), None)
    if q_keys:
        ax.fill_between(gen, scale([r[q_keys[0]] for r in records]), scale([r[q_keys[1]] for r in records]),
                        color="#4c8dff", alpha=0.35, linewidth=0, label="quartiles")
    ax.plot(gen, col["median"], color="#7fb0ff", linewidth=2.0, label="median")
    ax.plot(gen, col["max"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    ax.plot(gen, col["min"], color="#7fb0ff", linewidth=0.8, alpha=0.7)
    ax.set_xlim(gen.min(), max(gen.max(), gen.min() + 1))
    ax.set_xlabel("generation")
    handles, labels = ax.get_legend_handles_labels()
    if probability:
        lo, hi = _limits(np.concatenate(list(col.values())))
        ax.set_yticks(*logit_ticks(lo, hi))
        ax.set_ylim(lo, hi)
        extra = _class_counts(ax, gen, records, num_classes)
        handles, labels = handles + extra[0], labels + extra[1]
    what = "confidence" if probability else "activation"
    ax.set_ylabel(f"champion {what} over {'classes' if probability else 'units'}")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=4, fontsize=8, frameon=False, labelcolor=INK)
    ax.set_title(f"Champion {what} per generation", fontsize=11)
    return _png(fig)


def _class_counts(ax, gen: np.ndarray, records: list[dict], num_classes: int) -> tuple[list, list]:
    """Classes ≥ 99 % and ≥ 99.99 % on a second y axis; returns its legend handles and labels."""
    from matplotlib.ticker import MaxNLocator

    right = ax.twinx()
    _style(right)
    right.grid(False)
    for key, color, name in (("n99", "#b5e05e", "classes ≥ 99 %"), ("n9999", "#5ee08a", "classes ≥ 99.99 %")):
        if all(key in r for r in records):
            right.step(gen, [r[key] for r in records], where="post", color=color, linewidth=1.6, label=name)
    right.set_ylim(0, num_classes * 1.02)
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("classes", color=INK)
    return right.get_legend_handles_labels()


def histogram_plot(champions: list[Champion], num_classes: int, fitness_kind: str = LOG_PROB) -> bytes:
    """Histogram of the champions' final confidences (logit axis, 99 % and 99.99 % marked), or
    of a unit run's final activations (linear axis), as PNG bytes."""
    from matplotlib.ticker import MaxNLocator

    fitness = np.array([c.fitness for c in champions], dtype=np.float64)
    fig, ax = _figure(7.0, 3.4)
    if fitness_kind == LOG_PROB:
        _confidence_histogram(ax, champions, num_classes, logit10_from_log_prob(fitness))
    else:
        ax.hist(fitness, bins=min(40, max(10, len(fitness))), color="#7fb0ff", edgecolor=FACE, linewidth=0.5)
        ax.set_xlabel("final champion activation")
        ax.set_title(f"Final activations: {len(champions)}/{num_classes} units filled, median "
                     f"{float(np.median(fitness)):.4g}, best {float(fitness.max()):.4g}", fontsize=11)
    ax.set_ylabel("classes" if fitness_kind == LOG_PROB else "units")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def _confidence_histogram(ax, champions: list[Champion], num_classes: int, values: np.ndarray) -> None:
    """The confidences' histogram on the logit axis, with the 99 % and 99.99 % lines."""
    lo, hi = _limits(values)
    bins = np.linspace(lo, hi, int(min(80, max(20, (hi - lo) * 8))) + 1)
    ax.hist(values, bins=bins, color="#7fb0ff", edgecolor=FACE, linewidth=0.5)
    for p, color in ((0.99, "#b5e05e"), (0.9999, "#5ee08a")):
        if lo <= float(logit10(p)) <= hi:
            ax.axvline(float(logit10(p)), color=color, linewidth=1.2, linestyle="--")
    ax.set_xticks(*logit_ticks(lo, hi))
    ax.set_xlim(lo, hi)
    ax.set_xlabel("final champion confidence")
    n99 = sum(c.confidence >= 0.99 for c in champions)
    n9999 = sum(c.confidence >= 0.9999 for c in champions)
    ax.set_title(f"Final confidences: {len(champions)}/{num_classes} classes filled, "
                 f"{n99} ≥ 99 %, {n9999} ≥ 99.99 %", fontsize=11)
