"""``Emitter``: the base of everything that proposes genomes to the engine.

Shaped after pyribs' ``EmitterBase`` and QDax's ``Emitter``: an emitter is asked for
``n`` genomes, and after the whole batch has been scored and added to the archive it is
told the rows that are its own. All randomness comes from the run's generator, passed
in at every call (an emitter never keeps one), and everything an emitter carries from
one generation to the next is in ``state_dict`` so that a resumed run is exact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from evofool.encodings.base import Encoding, Genomes


class Emitter(ABC):
    """Proposes genomes for the archive and learns from how they scored.

    Args:
        encoding: The encoding of the genomes it proposes.

    Attributes:
        name: Short identifier recorded in configs and checkpoints.
    """

    name: str = "emitter"
    # Evaluations its last ``ask`` spent beyond the genomes it returned (a gradient step
    # counts as 3; see GradientRefineEmitter): the engine adds them to the run's count.
    extra_evaluations: int = 0

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding

    @property
    def batch_size(self) -> int | None:
        """Places this emitter takes in the next batch; ``None``: a share of what the
        emitters with a batch size leave of the population (see ``evofool.engine.Engine``)."""
        return None

    @abstractmethod
    def ask(self, archive, n: int, rng: np.random.Generator, generation: int) -> Genomes:
        """``n`` genomes for the next batch.

        Args:
            archive: The ``ClassArchive`` (read only).
            n: How many genomes (its ``batch_size`` when that is not None; may be 0).
            rng: The run's generator.
            generation: The number of the generation being made (1 = the first).
        """

    def tell(self, archive, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
             rng: np.random.Generator) -> None:
        """Its own rows of the scored batch, after the archive has been updated with all of it.

        Args:
            archive: The ``ClassArchive``, already updated with the whole batch.
            genomes: The genomes this emitter asked for, in its order.
            images: Their images (``n×C×H×W`` uint8).
            fitness: Their per-class fitness (``n×K`` float64).
            rng: The run's generator.
        """

    # True: the engine calls ``observe`` after each generation's tells (it then keeps track
    # of which rows took which cells; free for emitters that do not ask).
    observes_gains: bool = False

    def observe(self, own: tuple[float, int], rest: tuple[float, int]) -> None:
        """After every emitter was told: what this emitter's rows gained the archive this
        generation and what they cost, and the same for the rest of the batch. A gain is the
        sum, over the cells a row took, of the rise of their fitness (a cell empty before
        counts 0); a cost is rows plus ``extra_evaluations``. Only called where
        ``observes_gains``."""

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able state and named arrays that restore this emitter between generations."""
        return {}, {}

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restores what ``state_dict`` returned (raises ValueError/KeyError when it does not fit)."""

    def config(self) -> dict:
        """The emitter's settings, as recorded in a run's config.json."""
        return {"type": self.name}

    # --- helpers -------------------------------------------------------------------------
    def empty(self, archive) -> Genomes:
        """A batch of no genomes (what an emitter with nothing to propose returns)."""
        return self.encoding.take(archive.genomes, np.empty(0, dtype=np.int64))


class ProposalEmitter(Emitter):
    """An emitter whose proposals are made when it is told a generation and wait for the
    next one: its batch size is how many wait, and its ``ask`` hands them out (the same ones
    until the next ``tell``). Subclasses set ``pending`` in ``tell``; the waiting genomes are
    checkpointed as ``pending.*`` arrays (``pending_state`` / ``load_pending``)."""

    pending: Genomes | None = None   # proposals waiting for the next generation
    _generation: int = 0             # of the last ask: the generation the next tell scores

    @property
    def batch_size(self) -> int:
        return 0 if self.pending is None else len(self.pending)

    def ask(self, archive, n: int, rng: np.random.Generator, generation: int) -> Genomes:
        if n != self.batch_size:
            raise ValueError(f"{self.batch_size} proposals are waiting, {n} asked for")
        self._generation = generation
        # Kept until the next tell: asking again (without a tell) gives the same proposals.
        return self.empty(archive) if self.pending is None else self.pending

    def pending_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``{"pending": n}`` and the waiting genomes packed as ``pending.*`` arrays."""
        n = self.batch_size
        arrays = {} if not n else {f"pending.{k}": v for k, v in
                                   self.encoding.pack(self.pending, np.arange(n)).items()}
        return {"pending": n}, arrays

    def load_pending(self, state: dict, arrays: dict[str, np.ndarray]) -> int:
        """Restores what ``pending_state`` returned; returns how many wait."""
        n = int(state["pending"])
        packed = {k[len("pending."):]: v for k, v in arrays.items() if k.startswith("pending.")}
        if n and not packed:
            raise ValueError(f"{n} pending proposals recorded but none saved")
        self.pending = self.encoding.unpack(packed, np.arange(n), n) if n else None
        return n
