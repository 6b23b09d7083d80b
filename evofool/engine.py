"""The generation loop: multi-task MAP-Elites with one batched forward pass per generation.

Read top-down, one generation is::

    parents  = uniform sample of champions from occupied cells   (generation 1: random genomes)
    children = encoding.vary(parents)
    images   = encoding.render(children)                          # B×C×H×W uint8, on the device
    logp     = evaluator.log_probs(images)                        # B×K, ONE forward pass
    archive.update(children, images, logp)                        # every cell each child beats
    record   = statistics over the champions' confidences

With step recombination (direct encoding, on by default) the best mutation steps of
each class are also averaged into a few candidates that fill places in the next
generation's batch (``evofool.recombination``).

DEAP supplies the ``Toolbox`` the steps are registered in, and ``Statistics`` /
``Logbook`` for the records; evofool owns the loop and the batched evaluation.
All randomness comes from one NumPy generator passed in explicitly.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Protocol

import numpy as np
import torch
from deap import base, tools

from evofool.archive import ClassArchive
from evofool.encodings.base import Encoding, Genomes
from evofool.evaluator import BatchEvaluator
from evofool.recombination import StepRecombination

THRESHOLDS = {"n99": 0.99, "n9999": 0.9999}
TIMING_KEYS = ("evals_per_s", "seconds")  # the only record fields that differ between identical runs


class Scorer(Protocol):
    """Renders and scores a batch of genomes somewhere (this process, Ray workers...)."""

    def __call__(self, genomes: Genomes) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(images B×C×H×W uint8, log_probs B×K float64)`` in the genomes' order."""


SELECTIONS = ("uniform", "lagging")
LAGGING_UNIFORM_SHARE = 0.25  # of a lagging-selection batch drawn uniformly from all cells


def sample_parents(archive: ClassArchive, n: int, rng: np.random.Generator,
                   selection: str = "uniform", focus_below: float = 0.9999) -> np.ndarray:
    """Classes whose champions parent the next ``n`` offspring.

    Args:
        archive: The archive to draw champions from.
        n: Number of parents.
        rng: The run's generator.
        selection: ``uniform`` — uniform over occupied cells (the paper's MAP-Elites);
            ``lagging`` — three quarters of the batch uniform over occupied cells whose
            champion is still below ``focus_below``, a quarter uniform over all occupied
            cells (all of it once every cell is above), so most of the batch works on
            the classes that are not fooled yet.
        focus_below: Confidence under which a class counts as lagging.

    Returns:
        ``n`` class indices.
    """
    occupied = archive.occupied
    if selection == "uniform":
        return occupied[rng.integers(0, len(occupied), size=n)]
    if selection != "lagging":
        raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
    lagging = occupied[archive.confidences()[occupied] < focus_below]
    if len(lagging) == 0:
        return occupied[rng.integers(0, len(occupied), size=n)]
    # A share of the batch still comes from every cell: a lagging champion can get stuck
    # (e.g. a CPPN whose 8-bit image no small change alters), and MAP-Elites' way out is
    # an offspring of another class's champion taking its cell.
    n_all = int(round(LAGGING_UNIFORM_SHARE * n))
    return np.concatenate([lagging[rng.integers(0, len(lagging), size=n - n_all)],
                           occupied[rng.integers(0, len(occupied), size=n_all)]])


def sorted_quantile(v: np.ndarray, q: float) -> float:
    """``np.quantile(v, q)`` (linear interpolation) of an already sorted ``v``, without
    NumPy's ~50 µs of overhead per call."""
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))


def make_statistics() -> tools.Statistics:
    """DEAP statistics over the champions' confidences (one value per class).

    ``compile([confidences])``: the data is ONE element, the whole vector, because DEAP
    builds a Python tuple of its data's elements and hands it to every function; with the
    vector as the only element each statistic is one NumPy call on an array, not a
    conversion of K Python floats (1,000 on ImageNet) per statistic. The key sorts it once
    for all of them.
    """
    stats = tools.Statistics(key=np.sort)
    stats.register("min", lambda v: float(v[0][0]))
    stats.register("q1", lambda v: sorted_quantile(v[0], 0.25))
    stats.register("median", lambda v: sorted_quantile(v[0], 0.5))
    stats.register("q3", lambda v: sorted_quantile(v[0], 0.75))
    stats.register("max", lambda v: float(v[0][-1]))
    for name, level in THRESHOLDS.items():
        stats.register(name, lambda v, level=level: int(np.count_nonzero(v[0] >= level)))
    return stats


class Engine:
    """Runs generations of MAP-Elites over a ``ClassArchive``.

    Args:
        encoding: Turns genomes into images.
        evaluator: Scores images (one forward pass per generation, chunked).
        archive: The per-class champions.
        population: Offspring per generation.
        rng: The run's single source of randomness.
        scorer: Renders and scores genomes; default: ``encoding.render`` then ``evaluator``
            in this process (``evofool.distributed.RayEvaluator`` farms it out instead).
        selection: Parent choice, see ``sample_parents``.
        focus_below: Threshold of the ``lagging`` selection.
        recombination: Proposes recombined-step candidates that take places in the next
            generation (vector encodings only); None: plain mutation.
    """

    def __init__(self, encoding: Encoding, evaluator: BatchEvaluator, archive: ClassArchive,
                 population: int, rng: np.random.Generator, scorer: Scorer | None = None,
                 selection: str = "uniform", focus_below: float = 0.9999,
                 recombination: StepRecombination | None = None) -> None:
        if recombination is not None and not encoding.vector_genomes:
            raise ValueError(f"step recombination needs vector genomes; {encoding.name} genomes are not")
        self.encoding = encoding
        self.evaluator = evaluator
        self.archive = archive
        self.population = int(population)
        self.rng = rng
        self.generation = 0          # generations completed
        self.evaluations = 0         # images scored so far
        self.stats = make_statistics()
        self.logbook = tools.Logbook()
        self.toolbox = base.Toolbox()
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; choose one of {SELECTIONS}")
        self.toolbox.register("select", sample_parents, self.archive, selection=selection,
                              focus_below=focus_below)
        self.toolbox.register("vary", self.encoding.vary)
        self.toolbox.register("render", self.encoding.render)
        self.toolbox.register("evaluate", self.evaluator.log_probs)
        self.recombination = recombination
        self.pending: Genomes | None = None  # proposals waiting for the next generation
        self._asked: tuple[np.ndarray, Genomes, Genomes] | None = None  # parents' classes, parents, children
        self.score: Callable[[Genomes], tuple[torch.Tensor, torch.Tensor]] = scorer or self.score_locally

    # --- ask / tell -------------------------------------------------------------------------
    def ask(self) -> Genomes:
        """The next generation's genomes: random at first, then mutated champions.

        Where the previous generation left recombined-step proposals, they fill the
        last places of the batch.
        """
        self._asked = None
        # After a generation every cell is occupied (any finite score beats an empty cell).
        if self.generation == 0 and len(self.archive.occupied) == 0:
            return self.encoding.random(self.population, self.rng)
        n_pending = 0 if self.pending is None else len(self.pending)
        classes = self.toolbox.select(self.population - n_pending, self.rng)
        parents = self.archive.genomes_of(classes)
        children = self.toolbox.vary(parents, self.rng, self.generation + 1)
        if self.recombination is not None:
            self._asked = (classes, parents, children)
        if n_pending:
            return self.encoding.concat(children, self.pending)
        return children

    def tell(self, genomes: Genomes, images: torch.Tensor, log_probs: torch.Tensor) -> np.ndarray:
        """Adds a scored generation to the archive; returns the classes that improved."""
        self.generation += 1
        self.evaluations += int(log_probs.shape[0])
        improved = self.archive.update(genomes, images, log_probs, self.generation)
        self.pending = None
        if self._asked is not None:
            classes, parents, children = self._asked  # children = genomes[:len(classes)]
            self.pending = self.recombination.propose(
                self.encoding, classes, parents, children, log_probs[:len(classes)],
                self.archive.genomes, self.population)
            self._asked = None
        return improved

    def score_locally(self, genomes: Genomes) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders the batch and scores it in one (chunked) forward pass, in this process."""
        images = self.toolbox.render(genomes)
        return images, self.toolbox.evaluate(images)

    def step(self) -> dict:
        """Runs one generation and returns its record (also appended to the logbook)."""
        start = time.perf_counter()
        genomes = self.ask()
        images, log_probs = self.score(genomes)
        improved = self.tell(genomes, images, log_probs)
        seconds = time.perf_counter() - start
        record = {"generation": self.generation, "evaluations": self.evaluations,
                  "improved": int(len(improved)),
                  **self.stats.compile([self.archive.confidences()]),
                  "evals_per_s": round(int(log_probs.shape[0]) / max(seconds, 1e-9), 1),
                  "seconds": round(seconds, 6)}
        self.logbook.record(**record)
        return record

    # --- state (checkpoints) ------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able state and named arrays that restore this engine exactly."""
        state = {
            "generation": self.generation,
            "evaluations": self.evaluations,
            "rng": self.rng.bit_generator.state,
            "python_random": _python_random_state(),
            "encoding": self.encoding.state_dict(),
        }
        arrays = self.archive.arrays()
        if self.pending is not None:
            arrays.update({f"pending.{k}": v for k, v in
                           self.encoding.pack(self.pending, np.arange(len(self.pending))).items()})
        arrays["rng.torch_cpu"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                arrays[f"rng.torch_cuda{i}"] = s.numpy()
        return state, arrays

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restores what ``state_dict`` returned (raises ValueError/KeyError when it does not fit)."""
        self.archive.load_arrays(arrays)
        self.generation = int(state["generation"])
        self.evaluations = int(state["evaluations"])
        self.rng.bit_generator.state = state["rng"]
        random.setstate(_python_random_from_json(state["python_random"]))
        self.encoding.load_state_dict(state["encoding"])
        pending = {k[len("pending."):]: v for k, v in arrays.items() if k.startswith("pending.")}
        self.pending = None
        if pending:
            n = len(next(iter(pending.values())))
            self.pending = self.encoding.unpack(pending, np.arange(n), n)
        torch.set_rng_state(torch.from_numpy(np.asarray(arrays["rng.torch_cpu"], dtype=np.uint8).copy()))
        if torch.cuda.is_available():
            cuda = [torch.from_numpy(arrays[k].copy()) for k in sorted(arrays) if k.startswith("rng.torch_cuda")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)


def _python_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_random_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
