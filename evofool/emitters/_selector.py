"""Selectors: which champions parent the next offspring (QDax's ``Selector``)."""

from __future__ import annotations

import numpy as np

LAGGING_UNIFORM_SHARE = 0.25  # of a lagging-selection batch drawn uniformly from all cells


class Selector:
    """Chooses parent cells of a ``ClassArchive``; stateless, so nothing to checkpoint."""

    name: str = "selector"

    def select(self, archive, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` class indices whose champions parent the next offspring (the archive must
        have at least one occupied cell)."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"selection": self.name}


class UniformSelector(Selector):
    """Uniform over occupied cells: the paper's MAP-Elites."""

    name = "uniform"

    def select(self, archive, n: int, rng: np.random.Generator) -> np.ndarray:
        occupied = archive.occupied
        return occupied[rng.integers(0, len(occupied), size=n)]


class LaggingSelector(Selector):
    """Most of the batch on the classes that are not fooled yet.

    ``1 - uniform_share`` of the batch is uniform over occupied cells whose champion is
    still below ``focus_below``, the rest uniform over all occupied cells (all of it
    once every cell is above).

    Args:
        focus_below: Confidence under which a class counts as lagging.
        uniform_share: Fraction of the batch drawn from every occupied cell.
    """

    name = "lagging"

    def __init__(self, focus_below: float = 0.9999, uniform_share: float = LAGGING_UNIFORM_SHARE) -> None:
        self.focus_below = float(focus_below)
        self.uniform_share = float(uniform_share)

    def select(self, archive, n: int, rng: np.random.Generator) -> np.ndarray:
        occupied = archive.occupied
        lagging = occupied[archive.confidences()[occupied] < self.focus_below]
        if len(lagging) == 0:
            return occupied[rng.integers(0, len(occupied), size=n)]
        # A share of the batch still comes from every cell: a lagging champion can get stuck
        # (e.g. a CPPN whose 8-bit image no small change alters), and MAP-Elites' way out is
        # an offspring of another class's champion taking its cell.
        n_all = int(round(self.uniform_share * n))
        return np.concatenate([lagging[rng.integers(0, len(lagging), size=n - n_all)],
                               occupied[rng.integers(0, len(occupied), size=n_all)]])

    def config(self) -> dict:
        return {"selection": self.name, "focus_below": self.focus_below, "uniform_share": self.uniform_share}


SELECTORS: dict[str, type[Selector]] = {"uniform": UniformSelector, "lagging": LaggingSelector}
SELECTIONS = tuple(SELECTORS)  # the names --selection accepts


def make_selector(selection: str = "uniform", focus_below: float = 0.9999) -> Selector:
    """The selector a run's ``selection`` / ``focus_below`` settings name."""
    if selection == "uniform":
        return UniformSelector()
    if selection == "lagging":
        return LaggingSelector(focus_below)
    raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
