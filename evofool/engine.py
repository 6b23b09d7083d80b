"""The generation loop: multi-task MAP-Elites with one batched forward pass per generation.

``Engine`` is the scheduler of pyribs' design: it joins one ``ClassArchive`` and a list of
emitters (``evofool.emitters``). Read top-down, one generation is::

    shares   = each emitter's batch size; the emitters without one fill the rest of the population
    genomes  = concat(emitter.ask(archive, share) for each emitter)   # in list order
    images   = encoding.render(genomes)                               # B×C×H×W uint8, on the device
    logp     = evaluator.log_probs(images)                            # B×K, ONE forward pass
    archive.update(genomes, images, logp)                             # every cell each offspring beats
    emitter.tell(archive, its rows of genomes, images, logp)          # for each emitter, in list order
    record   = statistics over the champions' confidences

By default the list is a ``MutationEmitter`` (champions picked by the ``selection``,
varied by the encoding; random genomes in the first generation) followed, with step
recombination (direct encoding, on by default), by a ``StepRecombinationEmitter`` whose
proposals, made from the previous generation's mutation steps, take places in the batch.

All randomness comes from one NumPy generator passed in explicitly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Callable, Protocol

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.devices import torch_threads
from evofool.emitters import (SELECTIONS, Emitter, ExtrapolationEmitter, LaggingSelector, MutationEmitter,
                              StepRecombination, StepRecombinationEmitter, WeightStepEmitter, make_selector)
from evofool.encodings.base import Encoding, Genomes
from evofool.evaluator import BatchEvaluator

__all__ = ["Engine", "SELECTIONS", "Scorer", "THRESHOLDS", "TIMING_KEYS", "champion_statistics",
           "sorted_quantile"]

THRESHOLDS = {"n99": 0.99, "n9999": 0.9999}
TIMING_KEYS = ("evals_per_s", "seconds")  # the only record fields that differ between identical runs


class Scorer(Protocol):
    """Renders and scores a batch of genomes somewhere (this process, Ray workers...)."""

    def __call__(self, genomes: Genomes) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(images B×C×H×W uint8, log_probs B×K float64)`` in the genomes' order."""


def sorted_quantile(v: np.ndarray, q: float) -> float:
    """``np.quantile(v, q)`` (linear interpolation) of an already sorted ``v``, without
    NumPy's ~50 µs of overhead per call."""
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))


def champion_statistics(confidences: np.ndarray) -> dict:
    """A record's statistics over the champions' confidences (one value per class):
    min, quartiles, max and the number of classes at each of ``THRESHOLDS``."""
    v = np.sort(confidences)  # once for all of them
    stats = {"min": float(v[0]), "q1": sorted_quantile(v, 0.25), "median": sorted_quantile(v, 0.5),
             "q3": sorted_quantile(v, 0.75), "max": float(v[-1])}
    for name, level in THRESHOLDS.items():
        stats[name] = int(np.count_nonzero(v >= level))
    return stats


class Engine:
    """Runs generations of MAP-Elites over a ``ClassArchive`` with a list of emitters.

    Args:
        encoding: Turns genomes into images.
        evaluator: Scores images (one forward pass per generation, chunked).
        archive: The per-class champions.
        population: Offspring per generation (the forward pass's batch).
        rng: The run's single source of randomness.
        scorer: Renders and scores genomes; default: ``encoding.render`` then ``evaluator``
            in this process (``evofool.distributed.RayEvaluator`` farms it out instead).
        selection: Parent choice of the default mutation emitter (``evofool.emitters.SELECTIONS``).
        focus_below: Threshold of the ``lagging`` selection.
        recombination: Step recombination whose proposals take places in the next
            generation (vector encodings only); None: plain mutation.
        extrapolate: Step lengths of an ``ExtrapolationEmitter`` (a weight step that won
            its parent's cell, continued; cppn), whose proposals take places in the next
            generation; empty: none.
        weight_steps: Places of each batch given to a ``WeightStepEmitter`` (per-cell
            Gaussian steps on a champion's weights; cppn), parents chosen among the cells
            below ``focus_below``; 0: none.
        extra_emitters: Emitters appended to the list the other arguments describe (e.g. a
            ``GradientRefineEmitter``).
        emitters: An explicit emitter list instead of the one ``selection``, ``focus_below``
            and ``recombination`` describe. Emitters whose ``batch_size`` is an int get that
            many places; those whose ``batch_size`` is None share the rest (the first ones
            get one more where it does not divide).
    """

    def __init__(self, encoding: Encoding, evaluator: BatchEvaluator, archive: ClassArchive,
                 population: int, rng: np.random.Generator, scorer: Scorer | None = None,
                 selection: str = "uniform", focus_below: float = 0.9999,
                 recombination: StepRecombination | None = None, *, extrapolate: Sequence[float] = (),
                 weight_steps: int = 0, extra_emitters: Sequence[Emitter] = (), emitters: Sequence[Emitter] | None = None) -> None:
        self.encoding = encoding
        self.evaluator = evaluator
        self.archive = archive
        self.population = int(population)
        self.rng = rng
        self.generation = 0          # generations completed
        self.evaluations = 0         # images scored so far, plus gradient steps (3 each)
        if emitters is None:
            mutation = MutationEmitter(encoding, make_selector(selection, focus_below))
            emitters = [mutation]
            if recombination is not None:
                emitters.append(StepRecombinationEmitter(encoding, mutation, self.population, recombination))
            if extrapolate:
                emitters.append(ExtrapolationEmitter(encoding, mutation, self.population, extrapolate,
                                                      focus_below=focus_below))
            if weight_steps:
                emitters.append(WeightStepEmitter(encoding, weight_steps, LaggingSelector(focus_below)))
            emitters.extend(extra_emitters)
        elif (recombination is not None or selection != "uniform" or focus_below != 0.9999
              or extrapolate or weight_steps or extra_emitters):
            raise ValueError("pass either emitters or selection/focus_below/recombination/extrapolate/"
                             "weight_steps/extra_emitters, not both")
        self.emitters: list[Emitter] = list(emitters)
        if not self.emitters:
            raise ValueError("the engine needs at least one emitter")
        for i, emitter in enumerate(self.emitters):
            # An emitter that learns from another's rows reads them when it is told, so that
            # one must be told (and therefore listed) before it.
            source = getattr(emitter, "source", None)
            if source is not None and not any(source is e for e in self.emitters[:i]):
                raise ValueError(f"emitter {i} ({emitter.name}) learns from an emitter that is not "
                                 f"listed before it")
        self._shares: list[int] | None = None  # places of each emitter in the batch last asked for
        self.score: Callable[[Genomes], tuple[torch.Tensor, torch.Tensor]] = scorer or self.score_locally

    @property
    def recombination(self) -> StepRecombination | None:
        """The step recombination of the first ``StepRecombinationEmitter``, if any."""
        for emitter in self.emitters:
            if isinstance(emitter, StepRecombinationEmitter):
                return emitter.recombination
        return None

    def config(self) -> dict:
        """The emitters' settings, as recorded in a run's config.json."""
        return {"emitters": [emitter.config() for emitter in self.emitters]}

    # --- ask / tell -------------------------------------------------------------------------
    def shares(self) -> list[int]:
        """Places of each emitter in the next batch: its ``batch_size``, or for those without
        one an equal share of what is left of the population."""
        sizes = [emitter.batch_size for emitter in self.emitters]
        fill = [i for i, s in enumerate(sizes) if s is None]
        rest = self.population - sum(s for s in sizes if s is not None)
        if rest < 0 or (rest > 0 and not fill):
            raise ValueError(f"the emitters' batch sizes {sizes} do not fit a population of {self.population}")
        each, extra = divmod(rest, max(len(fill), 1))
        for j, i in enumerate(fill):
            sizes[i] = each + (j < extra)
        return sizes

    def ask(self) -> Genomes:
        """The next generation's genomes: each emitter's share, concatenated in list order.

        By default: mutated champions (random genomes at first), then the step-recombination
        proposals the previous generation left, in the last places of the batch.
        """
        shares = self.shares()
        generation = self.generation + 1
        batches = [emitter.ask(self.archive, n, self.rng, generation)
                   for emitter, n in zip(self.emitters, shares)]
        for emitter, n, batch in zip(self.emitters, shares, batches):
            if len(batch) != n:
                raise ValueError(f"emitter {emitter.name} gave {len(batch)} genomes for {n} places")
        self._shares = shares
        # One non-empty batch is passed on as it is (no copy; encodings need not concatenate).
        filled = [batch for batch in batches if len(batch)] or batches[:1]
        genomes = filled[0]
        for batch in filled[1:]:
            genomes = self.encoding.concat(genomes, batch)
        return genomes

    def tell(self, genomes: Genomes, images: torch.Tensor, log_probs: torch.Tensor) -> np.ndarray:
        """Adds a scored generation (what ``ask`` returned) to the archive, then tells each
        emitter its rows; returns the classes that improved."""
        shares, self._shares = self._shares, None
        n = int(log_probs.shape[0])
        if shares is None or sum(shares) != n:
            raise ValueError(f"tell needs the {n} genomes of the last ask, in its order")
        self.generation += 1
        # The batch, and what emitters spent beyond it (gradient steps, 3 evaluations each).
        self.evaluations += n + sum(int(emitter.extra_evaluations) for emitter in self.emitters)
        observing = [i for i, emitter in enumerate(self.emitters) if emitter.observes_gains]
        before = self.archive.fitness.clone() if observing else None
        improved = self.archive.update(genomes, images, log_probs, self.generation)
        start = 0
        for emitter, share in zip(self.emitters, shares):
            stop = start + share
            rows = genomes if share == n else self.encoding.rows(genomes, start, stop)
            emitter.tell(self.archive, rows, images[start:stop], log_probs[start:stop], self.rng)
            start = stop
        if observing:
            self._report_gains(observing, shares, before, improved)
        return improved

    def _report_gains(self, observing: list[int], shares: list[int], before: torch.Tensor,
                      improved: np.ndarray) -> None:
        """Tells the emitters that observe gains what each side of the batch gained and cost."""
        gains = np.zeros(len(self.emitters))
        if len(improved):
            cells = torch.from_numpy(improved).to(before.device)
            old = before[cells]
            rise = torch.where(torch.isfinite(old), self.archive.fitness[cells] - old, torch.zeros_like(old))
            owner = np.searchsorted(np.cumsum(shares), self.archive.last_winners, side="right")
            gains = np.bincount(owner, weights=rise.cpu().numpy(), minlength=len(self.emitters))
        costs = np.array([share + int(emitter.extra_evaluations) for emitter, share in zip(self.emitters, shares)])
        for i in observing:
            self.emitters[i].observe((float(gains[i]), int(costs[i])),
                                     (float(gains.sum() - gains[i]), int(costs.sum() - costs[i])))

    def score_locally(self, genomes: Genomes) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders the batch and scores it in one (chunked) forward pass, in this process.

        Where the encoding really renders, the evaluator is handed the rendering: where it
        scores in several streams (ONNX Runtime on the CPU), each stream renders the chunks
        it scores, so rendering and forward passes share the cores instead of taking turns
        (the same images).
        """
        if self.encoding.renders:
            def render(start: int, stop: int) -> torch.Tensor:
                return self.encoding.render(self.encoding.rows(genomes, start, stop))

            return self.evaluator.render_and_score(render, len(genomes))
        images = self.encoding.render(genomes)
        return images, self.evaluator.log_probs(images)

    def step(self) -> dict:
        """Runs one generation and returns its record."""
        start = time.perf_counter()
        # Selection, variation and the archive on one torch thread while ONNX Runtime has
        # the cores for the forward (see BatchEvaluator.host_threads); rendering keeps them all.
        host = self.evaluator.host_threads
        with torch_threads(host):
            genomes = self.ask()
        images, log_probs = self.score(genomes)
        with torch_threads(host):
            improved = self.tell(genomes, images, log_probs)
        seconds = time.perf_counter() - start
        return {"generation": self.generation, "evaluations": self.evaluations,
                "improved": int(len(improved)),
                **champion_statistics(self.archive.confidences()),
                "evals_per_s": round(int(log_probs.shape[0]) / max(seconds, 1e-9), 1),
                "seconds": round(seconds, 6)}

    # --- state (checkpoints) ------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able state and named arrays that restore this engine exactly (between generations)."""
        state = {
            "generation": self.generation,
            "evaluations": self.evaluations,
            "rng": self.rng.bit_generator.state,
            "python_random": _python_random_state(),
            "encoding": self.encoding.state_dict(),
            "emitters": [],
        }
        arrays = self.archive.arrays()
        for i, emitter in enumerate(self.emitters):
            emitter_state, emitter_arrays = emitter.state_dict()
            state["emitters"].append({"type": emitter.name, "state": emitter_state})
            arrays.update({f"emitters.{i}.{k}": v for k, v in emitter_arrays.items()})
        arrays["rng.torch_cpu"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                arrays[f"rng.torch_cuda{i}"] = s.numpy()
        return state, arrays

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restores what ``state_dict`` returned (raises ValueError/KeyError when it does not fit)."""
        if "emitters" not in state:
            state, arrays = _pre_emitter_state(state, arrays, self.emitters)
        saved = [entry["type"] for entry in state["emitters"]]
        if saved != [emitter.name for emitter in self.emitters]:
            raise ValueError(f"the checkpoint's emitters {saved} are not this engine's "
                             f"{[emitter.name for emitter in self.emitters]}")
        self.archive.load_arrays(arrays)
        self.generation = int(state["generation"])
        self.evaluations = int(state["evaluations"])
        self.rng.bit_generator.state = state["rng"]
        random.setstate(_python_random_from_json(state["python_random"]))
        self.encoding.load_state_dict(state["encoding"])
        for i, (emitter, entry) in enumerate(zip(self.emitters, state["emitters"])):
            prefix = f"emitters.{i}."
            emitter.load_state_dict(entry["state"], {k[len(prefix):]: v for k, v in arrays.items()
                                                     if k.startswith(prefix)})
        self._shares = None
        torch.set_rng_state(torch.from_numpy(np.asarray(arrays["rng.torch_cpu"], dtype=np.uint8).copy()))
        if torch.cuda.is_available():
            cuda = [torch.from_numpy(arrays[k].copy()) for k in sorted(arrays) if k.startswith("rng.torch_cuda")]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)


def _pre_emitter_state(state: dict, arrays: dict[str, np.ndarray], emitters: list) -> tuple[dict, dict]:
    """A checkpoint written before emitters, in today's form (runs started then still resume).

    Then, the only state beyond the archive and generators was step recombination's waiting
    proposals (``pending.*`` arrays); the mutation emitter keeps nothing between generations.
    """
    names = [emitter.name for emitter in emitters]
    pending = {k: v for k, v in arrays.items() if k.startswith("pending.")}
    n = len(next(iter(pending.values()))) if pending else 0
    entries, moved = [], {k: v for k, v in arrays.items() if not k.startswith("pending.")}
    for i, emitter in enumerate(emitters):
        emitter_state, _ = emitter.state_dict()
        if "pending" in emitter_state:  # the step recombination emitter
            emitter_state = {**emitter_state, "pending": n}
            moved.update({f"emitters.{i}.{k}": v for k, v in pending.items()})
            pending = {}
        entries.append({"type": names[i], "state": emitter_state})
    if pending:
        raise ValueError("the checkpoint holds step-recombination proposals, but this run has no "
                         "step recombination")
    return {**state, "emitters": entries}, moved


def _python_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_random_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
