"""``WeightStepEmitter``: a (1+1) evolution strategy per cell on its champion's weights.

pyribs' CMA-ME gives every emitter a search distribution around an elite; here every cell
keeps one step size, and its children are Gaussian steps on all of its champion's weights
with the graph unchanged (``encoding.step_weights``; the CPPN encoding has it). The step
size follows Rechenberg's 1/5 success rule per cell: a child that beats its parent's
fitness for the parent's class widens it, one that does not narrows it, so that about one
child in five succeeds. Where structural mutation (``MutationEmitter``) makes new images,
this one climbs the confidence of images that already nearly fool their class.
"""

from __future__ import annotations

import numpy as np
import torch

from evofool.emitters._emitter import Emitter
from evofool.emitters._selector import LaggingSelector, Selector
from evofool.encodings.base import Encoding, Genomes

# Starting step size on a weight (weights live in [-10, 10]): the typical step of the CPPN's
# polynomial mutation at eta 40 (~0.5), a little smaller since every weight moves at once.
WEIGHT_STEP_SIGMA0 = 0.3
WEIGHT_STEP_BOUNDS = (1e-3, 5.0)
# The 1/5 rule's speed: sigma * exp(+GAIN * 4/5) on success, * exp(-GAIN * 1/5) on failure,
# which keeps sigma where one try in five succeeds.
WEIGHT_STEP_GAIN = 0.5
SUCCESS_TARGET = 0.2


def one_fifth_rule(steps: np.ndarray, asked: tuple[np.ndarray, torch.Tensor], fitness: torch.Tensor,
                   low: float, high: float) -> np.ndarray:
    """Per-cell step sizes after Rechenberg's 1/5 success rule: each child made for a cell
    (``asked``: those cells, and their champions' fitness then) that beats that fitness for
    the cell's class widens its step, one that does not narrows it (several children of one
    cell: each moves it, in batch order); clipped to ``[low, high]``."""
    classes, before = asked
    index = torch.from_numpy(classes).to(fitness.device)
    own = fitness.to(torch.float64).gather(1, index.unsqueeze(1)).squeeze(1)
    success = (own > before.to(own.device)).cpu().numpy().astype(np.float64)
    log_steps = np.log(steps)
    np.add.at(log_steps, classes, WEIGHT_STEP_GAIN * (success - SUCCESS_TARGET))
    return np.clip(np.exp(log_steps), low, high)


class WeightStepEmitter(Emitter):
    """Children that move every weight of a chosen champion by a Gaussian step of its
    cell's step size; the step sizes follow the 1/5 success rule.

    Args:
        encoding: An encoding with ``step_weights(parents, sigmas, rng)`` (``cppn``).
        size: Places this emitter takes in each batch.
        selector: Chooses the cells; default: ``LaggingSelector`` (cells not yet fooled).
        sigma0: Starting step size of every cell.
    """

    name = "weight_step"

    def __init__(self, encoding: Encoding, size: int, selector: Selector | None = None,
                 sigma0: float = WEIGHT_STEP_SIGMA0) -> None:
        super().__init__(encoding)
        if not hasattr(encoding, "step_weights"):
            raise ValueError(f"the {encoding.name} encoding has no weights to step (use cppn)")
        self.size = int(size)
        self.selector = selector if selector is not None else LaggingSelector()
        self.sigma0 = float(sigma0)
        self.sigma: np.ndarray | None = None  # K step sizes, created at the first ask
        self._asked: tuple[np.ndarray, torch.Tensor] | None = None  # classes, their fitness then

    @property
    def batch_size(self) -> int:
        return self.size

    def _sigmas(self, num_classes: int) -> np.ndarray:
        if self.sigma is None or len(self.sigma) != num_classes:
            self.sigma = np.full(num_classes, self.sigma0)
        return self.sigma

    def ask(self, archive, n: int, rng: np.random.Generator, generation: int) -> Genomes:
        self._asked = None
        if n == 0 or len(archive.occupied) == 0:
            # The first generation is the mutation emitter's random one; draw nothing.
            return self.encoding.random(n, rng) if n else self.empty(archive)
        sigma = self._sigmas(archive.num_classes)
        classes = self.selector.select(archive, n, rng)
        self._asked = (classes, archive.fitness[torch.from_numpy(classes).to(archive.device)].clone())
        return self.encoding.step_weights(archive.genomes_of(classes), sigma[classes], rng)

    def tell(self, archive, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
             rng: np.random.Generator) -> None:
        if self._asked is not None:
            self.sigma = one_fifth_rule(self._sigmas(archive.num_classes), self._asked, fitness, *WEIGHT_STEP_BOUNDS)
        self._asked = None

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, ({} if self.sigma is None else {"sigma": self.sigma.copy()})

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.sigma = np.asarray(arrays["sigma"], dtype=np.float64).copy() if "sigma" in arrays else None
        self._asked = None

    def config(self) -> dict:
        return {"type": self.name, "size": self.size, "sigma0": self.sigma0, "gain": WEIGHT_STEP_GAIN,
                **self.selector.config()}
