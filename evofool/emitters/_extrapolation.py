"""``ExtrapolationEmitter``: a child whose weight step won its parent's cell is stepped on.

A champion of a CPPN run that already nearly fools its class climbs by small weight steps
(``p_weights_only``), and only a few in a hundred random steps beat it. A step that did,
though, points uphill: going on along it beats the new champion far more often than a
fresh random step does. Measured with ``benchmarks/extrapolation_probe.py`` (EfficientNet-
Lite0, AMD EPYC Zen 4; weights-only children of champions at 30-99 %): on the 200k-evaluation
archive of ``curiosity-bold-fine80-30`` seed 1, 35 of 800 children beat their parent (a mean
log-probability gain of 0.0007 a child); their steps continued by 0.5 / 1 / 2 / 4 times
beat the child 43 / 37 / 34 / 34 % of the time, with a mean gain of 0.0042 / 0.0034 /
0.0027 / 0.0034 an evaluation, against 5.7 % and 0.0001-0.0004 for a fresh weights-only
child of the child. On seed 0's archive at 1.05M evaluations: 14 of 1,200 (1.2 %) beat
their parent; continued 36 / 36 / 29 / 21 %, a fresh child 0 %.

So after each generation, for every class whose cell a same-graph child of the mutation
emitter took (only the weights differ from the parent that made it), this emitter
proposes ``child + s * (child - parent)`` for each length ``s``; a proposal that takes its
class's cell in turn is stepped on again from itself, along its own step; a class whose
champion is fooled (``focus_below``) proposes nothing. Proposals take
places in the next batch (at most ``max_share`` of the population; the mutation emitter
fills the rest) and win cells like any other offspring. It draws no random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from evofool.emitters._emitter import ProposalEmitter
from evofool.emitters._mutation import MutationEmitter
from evofool.emitters._step_recombination import step_lengths
from evofool.encodings.base import Encoding, Genomes

DEFAULT_LENGTHS = (0.5, 1.0, 2.0)
# A quarter of the batch at most (8 classes at population 100 with three lengths). In the
# 200k-evaluation runs of curiosity-bold-fine80-30 --extrapolate on (EfficientNet-Lite0, seeds
# 0 and 1) 21 and 18 proposals were waiting at 75k and 83k: the cap is near, not far.
DEFAULT_MAX_SHARE = 0.25


def parse_lengths(value: str | Sequence[float] | None) -> tuple[float, ...]:
    """``"off"`` → (); ``"on"`` → ``DEFAULT_LENGTHS``; ``"0.5,1,2"`` / ``[0.5, 1, 2]`` → lengths.

    Raises:
        ValueError: anything else, or a length that is not a finite number > 0.
    """
    word = value.strip().lower() if isinstance(value, str) else None
    if value is None or word in ("off", "none", ""):
        return ()
    if word == "on":
        return DEFAULT_LENGTHS
    return step_lengths(value, "extrapolate", "off, on")


def extrapolation_places(population: int, lengths: int, max_share: float = DEFAULT_MAX_SHARE) -> int:
    """The most places of a batch an ``ExtrapolationEmitter``'s proposals take: one per
    length for each proposing class, at most ``max_share`` of the population."""
    return int(max_share * population) // lengths * lengths


def took_own_cell(archive, classes: np.ndarray, fitness: torch.Tensor, generation: int) -> np.ndarray:
    """Per row, whether it holds its class's cell after ``generation``'s update: the cell
    changed then and this row's fitness for it is the cell's (the first such row of a class
    only, so that one class proposes once). A row that ties bit for bit with an earlier row
    of the batch, which the archive kept, counts too: the two scored alike, so going on
    from either is as good a bet."""
    if len(classes) == 0:
        return np.zeros(0, dtype=bool)
    index = torch.from_numpy(classes).to(archive.device)
    own = fitness.to(archive.device, torch.float64).gather(1, index.unsqueeze(1)).squeeze(1)
    took = ((archive.generation[index] == generation) & (own == archive.fitness[index])).cpu().numpy()
    first = np.zeros_like(took)
    _, where = np.unique(classes[took], return_index=True)
    first[np.flatnonzero(took)[where]] = True
    return first


class ExtrapolationEmitter(ProposalEmitter):
    """Proposes, for each cell a same-graph child just took, the child's step continued.

    Args:
        encoding: An encoding whose genomes have weights (``weights_of``, ``with_weights``,
            ``same_graph``: cppn).
        source: The mutation emitter whose children are stepped on; it must come before
            this emitter in the engine's list.
        population: Offspring per generation (caps the proposals).
        lengths: Multiples of the step at which proposals are made.
        max_share: At most this fraction of the population goes to proposals.
        focus_below: Only classes whose champion is below this confidence propose (a
            fooled class's cell is not worth places; runs of unit activations: all).
    """

    name = "extrapolation"

    def __init__(self, encoding: Encoding, source: MutationEmitter, population: int,
                 lengths: Sequence[float] = DEFAULT_LENGTHS, max_share: float = DEFAULT_MAX_SHARE,
                 focus_below: float = 0.9999) -> None:
        if not hasattr(encoding, "same_graph"):
            raise ValueError(f"extrapolation steps the weights of networks; {encoding.name} genomes are not")
        if not lengths:
            raise ValueError("ExtrapolationEmitter needs at least one step length")
        if extrapolation_places(population, len(lengths), max_share) < 1:
            raise ValueError(f"a population of {population} leaves {len(lengths)} extrapolation lengths no place "
                             f"(at most {max_share:g} of it goes to proposals, one place a length)")
        super().__init__(encoding)
        self.source = source
        self.population = int(population)
        self.lengths = tuple(float(s) for s in lengths)
        self.max_share = float(max_share)
        self.focus_below = float(focus_below)
        self._wait(None, np.zeros(0, dtype=np.int64), np.zeros(0))

    def _wait(self, proposals: Genomes | None, classes: np.ndarray, steps: np.ndarray) -> None:
        """What waits for the next generation: the proposals (``pending``), their classes and
        their own steps (float64, concatenated genome by genome as ``weights_of`` lays them out)."""
        self.pending, self.classes, self.steps = proposals, classes, steps

    def tell(self, archive, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
             rng: np.random.Generator) -> None:
        bases: list = []        # genomes stepped on
        classes: list = []      # their classes
        steps: list = []        # their steps (float64 weight vectors)
        # The proposals of this generation that took their cell go on along their own step.
        if self.batch_size:
            won = np.flatnonzero(took_own_cell(archive, self.classes, fitness, self._generation))
            counts = self.encoding.weight_counts(genomes)
            parts = np.split(self.steps, np.cumsum(counts)[:-1])
            for i in won:
                bases.append(self.encoding.take(genomes, np.array([i]))[0])
                classes.append(int(self.classes[i]))
                steps.append(parts[i])
        # The mutation emitter's same-graph children that took their parent's cell.
        lineage = self.source.lineage
        if lineage is not None:
            took = took_own_cell(archive, lineage.classes, lineage.fitness, self._generation)
            for i in np.flatnonzero(took):
                child = self.encoding.take(lineage.children, np.array([i]))[0]
                parent = self.encoding.take(lineage.parents, np.array([i]))[0]
                if int(lineage.classes[i]) in classes or not self.encoding.same_graph(child, parent):
                    continue  # a class goes on from one genome: a proposal's win comes first
                bases.append(child)
                classes.append(int(lineage.classes[i]))
                steps.append(self.encoding.weights_of([child]).astype(np.float64)
                             - self.encoding.weights_of([parent]).astype(np.float64))
        classes = np.asarray(classes, dtype=np.int64)
        if archive.is_probability and len(classes):
            lagging = np.flatnonzero(archive.confidences()[classes] < self.focus_below)
            bases, classes, steps = [bases[i] for i in lagging], classes[lagging], [steps[i] for i in lagging]
        self._propose(bases, classes, steps)

    def _propose(self, bases: list, classes: np.ndarray, steps: list) -> None:
        if not bases:
            self._wait(None, np.zeros(0, dtype=np.int64), np.zeros(0))
            return
        # The first in line (proposals that won, then the mutation's children, in batch order);
        # the constructor made sure at least one class fits.
        room = extrapolation_places(self.population, len(self.lengths), self.max_share) // len(self.lengths)
        bases, classes, steps = bases[:room], classes[:room], steps[:room]
        repeated = [b for b in bases for _ in self.lengths]
        base_w = self.encoding.weights_of(repeated).astype(np.float64)
        moves = np.concatenate([s * step for step in steps for s in self.lengths])
        proposals = self.encoding.with_weights(repeated, base_w + moves)
        # A proposal's own step is where it landed minus where it started (after clipping).
        self._wait(proposals, np.repeat(classes, len(self.lengths)),
                   self.encoding.weights_of(proposals).astype(np.float64) - base_w)

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        state, arrays = self.pending_state()
        if self.batch_size:
            arrays |= {"classes": self.classes.copy(), "steps": self.steps.copy()}
        return state, arrays

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        n = self.load_pending(state, arrays)
        if not n:
            self._wait(None, np.zeros(0, dtype=np.int64), np.zeros(0))
            return
        if "classes" not in arrays or "steps" not in arrays:
            raise ValueError(f"{n} pending extrapolations recorded without their classes and steps")
        classes = np.asarray(arrays["classes"], dtype=np.int64).copy()
        steps = np.asarray(arrays["steps"], dtype=np.float64).copy()
        if (len(classes) != n or (classes < 0).any() or not np.isfinite(steps).all()
                or len(steps) != int(self.encoding.weight_counts(self.pending).sum())):
            raise ValueError("the pending extrapolations' classes or steps do not match them")
        self._wait(self.pending, classes, steps)

    def config(self) -> dict:
        return {"type": self.name, "lengths": list(self.lengths), "max_share": self.max_share,
                "focus_below": self.focus_below}
