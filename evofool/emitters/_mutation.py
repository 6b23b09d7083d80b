"""``MutationEmitter``: champions chosen by a selector, varied by the encoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from evofool.emitters._emitter import Emitter
from evofool.emitters._selector import Selector, UniformSelector
from evofool.encodings.base import Encoding, Genomes


@dataclass(frozen=True)
class Lineage:
    """A mutation emitter's last told batch: who parented what, and how it scored.

    Attributes:
        classes: Class whose champion parented each child (``n``).
        parents: The parents (``n`` genomes; all children of one class share its champion
            as it was when they were made).
        children: The children (``n`` genomes), in the same order.
        fitness: The children's per-class fitness (``n×K``).
    """

    classes: np.ndarray
    parents: Genomes
    children: Genomes
    fitness: torch.Tensor


class MutationEmitter(Emitter):
    """Offspring of champions: ``encoding.vary`` of parents a ``Selector`` picks.

    While the archive is empty (the first generation) it asks for random genomes.
    It has no batch size of its own: it fills the places the other emitters leave.

    After each ``tell`` its ``lineage`` holds that batch's parents, children and fitness
    (None after a batch of random genomes), for emitters told after it in the same
    generation (``StepRecombinationEmitter``). It is valid only within that generation,
    so it is not part of the emitter's state.

    Args:
        encoding: The encoding that varies the parents.
        selector: Chooses the parents; default: uniform over occupied cells.
    """

    name = "mutation"

    def __init__(self, encoding: Encoding, selector: Selector | None = None) -> None:
        super().__init__(encoding)
        self.selector = selector if selector is not None else UniformSelector()
        self.lineage: Lineage | None = None
        self._asked: tuple[np.ndarray, Genomes] | None = None  # classes, parents of the last ask
        self._generation = 0  # of the last ask

    def ask(self, archive, n: int, rng: np.random.Generator, generation: int) -> Genomes:
        self._asked = None
        self.lineage = None
        self._generation = generation
        if n == 0:
            return self.empty(archive)  # draws nothing: the run's random stream is unchanged
        # After a generation every cell is occupied (any finite score beats an empty cell).
        if len(archive.occupied) == 0:
            return self.encoding.random(n, rng)
        classes = self.selector.select(archive, n, rng)
        parents = archive.genomes_of(classes)
        confidences = (archive.confidences()[classes]
                       if self.encoding.uses_parent_confidence and archive.is_probability else None)
        children = self.encoding.vary_scored(parents, confidences, rng, generation)
        self._asked = (classes, parents)
        return children

    def tell(self, archive, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
             rng: np.random.Generator) -> None:
        self.lineage = None if self._asked is None else Lineage(*self._asked, genomes, fitness)
        if self._asked is not None:
            self.selector.tell(archive, self._asked[0], fitness, self._generation)
        self._asked = None

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        state, arrays = self.selector.state_dict()
        return ({"selector": state} if state else {}), {f"selector.{k}": v for k, v in arrays.items()}

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.selector.load_state_dict(state.get("selector", {}),
                                      {k[len("selector."):]: v for k, v in arrays.items()
                                       if k.startswith("selector.")})

    def config(self) -> dict:
        return {"type": self.name, **self.selector.config()}
