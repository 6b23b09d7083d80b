"""Selectors: which champions parent the next offspring (QDax's ``Selector``)."""

from __future__ import annotations

import numpy as np
import torch

LAGGING_UNIFORM_SHARE = 0.25  # of a lagging-selection batch drawn uniformly from all cells
# Curiosity's memory: each generation its success counts are multiplied by this, so a
# cell's record covers roughly its last 1 / (1 - decay) generations.
CURIOSITY_DECAY = 0.99
# Curiosity's prior (a Beta(1, 1)): a champion nobody has tried yet counts as one success
# in two tries, so every cell keeps a chance to be picked.
CURIOSITY_PRIOR = (1.0, 2.0)


class Selector:
    """Chooses parent cells of a ``ClassArchive``.

    A selector that learns from how its picks fared overrides ``tell`` and keeps what it
    learnt in ``state_dict`` (checkpointed by its emitter); the base keeps nothing.
    """

    name: str = "selector"

    def select(self, archive, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` class indices whose champions parent the next offspring (the archive must
        have at least one occupied cell)."""
        raise NotImplementedError

    def tell(self, archive, classes: np.ndarray, fitness: torch.Tensor, generation: int) -> None:
        """How the children of the last ``select`` fared, after the archive took them.

        Args:
            archive: The ``ClassArchive``, already updated with the whole generation.
            classes: The selected parent class of each child (what ``select`` returned).
            fitness: The children's fitness (``n×K``), in the same order.
            generation: The generation the children belong to.
        """

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able state and named arrays that restore this selector between generations."""
        return {}, {}

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restores what ``state_dict`` returned."""

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


def children_that_entered(archive, fitness: torch.Tensor, generation: int) -> torch.Tensor:
    """Per child (row of ``fitness``), whether it took at least one cell of the archive in
    ``generation``: the cells that changed then, and for each the child that
    ``ClassArchive.update`` chose (the same ``max`` on the same values picks the same one)."""
    fitness = fitness.to(archive.device, torch.float64)
    entered = torch.zeros(fitness.shape[0], dtype=torch.bool, device=archive.device)
    changed = torch.nonzero(archive.generation == generation).flatten()
    if changed.numel():
        best, who = fitness.max(dim=0)
        mine = best[changed] == archive.fitness[changed]  # not a cell another emitter's child took
        entered[who[changed[mine]]] = True
    return entered


class CuriositySelector(Selector):
    """Lagging selection weighted by how often each cell's champion has lately parented a
    child that entered the archive (the "curiosity score" of Cully & Demiris 2018).

    On 1,000 classes most champions' children take no cell at all, while a few champions
    (often of related classes) keep producing children that take many: this spends the
    batch on those. Per cell it keeps decayed counts of successes and tries of its
    children (a Beta(1, 1) prior); a pick's weight is the success rate. When a cell gets a
    new champion its counts start again from the prior: it is another genome.

    ``1 - uniform_share`` of the batch is drawn by weight from the cells still below
    ``focus_below`` (all occupied cells once none is), the rest uniformly from all cells,
    as in ``LaggingSelector``.

    Args:
        focus_below: Confidence under which a class counts as lagging.
        uniform_share: Fraction of the batch drawn uniformly from every occupied cell.
        decay: Per-generation factor on the counts (``CURIOSITY_DECAY``).
    """

    name = "curiosity"

    def __init__(self, focus_below: float = 0.9999, uniform_share: float = LAGGING_UNIFORM_SHARE,
                 decay: float = CURIOSITY_DECAY) -> None:
        self.focus_below = float(focus_below)
        self.uniform_share = float(uniform_share)
        self.decay = float(decay)
        self.successes: np.ndarray | None = None  # K float64, created at the first select
        self.tries: np.ndarray | None = None

    def _counts(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        if self.successes is None or len(self.successes) != num_classes:
            self.successes = np.full(num_classes, CURIOSITY_PRIOR[0])
            self.tries = np.full(num_classes, CURIOSITY_PRIOR[1])
        return self.successes, self.tries

    def select(self, archive, n: int, rng: np.random.Generator) -> np.ndarray:
        successes, tries = self._counts(archive.num_classes)
        occupied = archive.occupied
        pool = occupied[archive.confidences()[occupied] < self.focus_below]
        if len(pool) == 0:
            pool = occupied
        n_all = int(round(self.uniform_share * n))
        weights = successes[pool] / tries[pool]
        picked = pool[rng.choice(len(pool), size=n - n_all, p=weights / weights.sum())]
        return np.concatenate([picked, occupied[rng.integers(0, len(occupied), size=n_all)]])

    def tell(self, archive, classes: np.ndarray, fitness: torch.Tensor, generation: int) -> None:
        successes, tries = self._counts(archive.num_classes)
        successes *= self.decay
        tries *= self.decay
        entered = children_that_entered(archive, fitness, generation).cpu().numpy()
        np.add.at(successes, classes, entered.astype(np.float64))
        np.add.at(tries, classes, 1.0)
        renewed = (archive.generation == generation).cpu().numpy()
        successes[renewed] = CURIOSITY_PRIOR[0]
        tries[renewed] = CURIOSITY_PRIOR[1]

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        if self.successes is None:
            return {}, {}
        return {}, {"successes": self.successes.copy(), "tries": self.tries.copy()}

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        if "successes" in arrays:
            successes = np.asarray(arrays["successes"], dtype=np.float64)
            tries = np.asarray(arrays["tries"], dtype=np.float64)
            if successes.shape != tries.shape or successes.ndim != 1:
                raise ValueError("curiosity counts do not match")
            self.successes, self.tries = successes.copy(), tries.copy()
        else:
            self.successes = self.tries = None

    def config(self) -> dict:
        return {"selection": self.name, "focus_below": self.focus_below, "uniform_share": self.uniform_share,
                "decay": self.decay}


SELECTORS: dict[str, type[Selector]] = {"uniform": UniformSelector, "lagging": LaggingSelector,
                                        "curiosity": CuriositySelector}
SELECTIONS = tuple(SELECTORS)  # the names --selection accepts


def make_selector(selection: str = "uniform", focus_below: float = 0.9999) -> Selector:
    """The selector a run's ``selection`` / ``focus_below`` settings name."""
    if selection == "uniform":
        return UniformSelector()
    if selection in SELECTORS:
        return SELECTORS[selection](focus_below)
    raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
