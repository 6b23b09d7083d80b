"""The small interface every encoding implements.

An encoding turns genomes into images. The engine never looks inside a genome: it
asks the encoding for random genomes, offspring of parents, images, and for the
bookkeeping that lets the archive keep one genome per class ("store").

``Genomes`` is whatever batch type the encoding chooses (a tensor for ``direct``,
a list of networks for ``cppn``); a *store* is a batch of fixed size K (one slot per
class) in which empty slots may hold anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

Genomes = Any


def torch_generator(rng: np.random.Generator, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng``.

    All randomness in a run flows from one NumPy generator; tensor noise on the
    device comes from a torch generator re-seeded from it at each use, so the
    NumPy state alone fixes the run (and is all a checkpoint needs).
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


def inert_when(*settings: tuple[str, object]):
    """``Param.inert`` of a parameter that computes nothing under any of ``settings``
    (``(name, value)`` pairs of other parameters): the first that holds, as ``name=value``."""
    def inert(params: dict) -> str | None:
        return next((f"{name}={value}" for name, value in settings if params[name] == value), None)
    return inert


class Encoding(ABC):
    """Maps genomes to images of one shape, in batches, on one device.

    Args:
        image_shape: ``(C, H, W)`` of the images to render (the model's input shape).
        device: Where genomes live and images are rendered.
    """

    name: str = "base"
    # True where genomes are fixed-length vectors (``to_vectors``/``from_vectors`` work),
    # which lets the engine recombine mutation steps (``evofool.recombination``).
    vector_genomes: bool = False
    # True where rendering is real work (CPPNs), so the engine renders each chunk in the
    # scoring stream that scores it (``BatchEvaluator.render_and_score``); False where the
    # genome is the image.
    renders: bool = True
    # The encoding's parameters (``--param NAME=VALUE``), each declared once: name ->
    # ``evofool.config.Param`` (kind, default, range, help). ``check_params`` checks them.
    PARAMS: dict = {}
    # Parameters that change only what ``--refine grad`` computes (cppn's refine_links): a
    # black-box run leaves them out of its hash, and the CLI names them as ignored there.
    REFINE_ONLY_PARAMS: tuple[str, ...] = ()

    def __init__(self, image_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        self.device = torch.device(device)

    # --- parameters ------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict:
        """Every parameter at its default."""
        return {name: param.default for name, param in cls.PARAMS.items()}

    @classmethod
    def legacy_params(cls) -> dict:
        """Parameters whose default changed after runs were first recorded: name -> what a
        recorded run without the name computed (``Param.legacy``). A new run records them
        explicitly (``params_to_record``), a read one gets the legacy value (``recorded_params``)."""
        from evofool.values import NO_LEGACY

        return {name: param.legacy for name, param in cls.PARAMS.items() if param.legacy is not NO_LEGACY}

    @classmethod
    def params_to_record(cls, params: dict) -> dict:
        """``params`` of a new run, with every parameter that has a legacy value made explicit
        (at its default), so reading the run back never mistakes it for an earlier one."""
        return {**{name: cls.PARAMS[name].default for name in cls.legacy_params()}, **params}

    @classmethod
    def recorded_params(cls, params: dict) -> dict:
        """``params`` as read from a run folder: a parameter that has a legacy value and is not
        recorded takes that value (the run predates the parameter's present default)."""
        return {**cls.legacy_params(), **params}

    @classmethod
    def check_params(cls, params: dict) -> dict:
        """``params`` checked against ``PARAMS``, missing ones at their defaults.

        Raises:
            ConfigError: an unknown name (the valid names and defaults are listed) or a value
                of the wrong kind or out of range.
        """
        # Imported here: evofool.config imports the engine, which imports this module.
        from evofool.values import ConfigError

        unknown = sorted(set(params) - set(cls.PARAMS))
        if unknown:
            valid = ", ".join(f"{k}={v}" for k, v in cls.defaults().items()) or "none"
            raise ConfigError(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))} for encoding {cls.name}; valid: {valid}")
        for key, value in params.items():
            cls.PARAMS[key].check(key, value, where=f"encoding {cls.name}: ")
        return {**cls.defaults(), **params}

    @classmethod
    def inert_params(cls, given, params: dict) -> dict[str, str]:
        """The parameters among ``given`` (names) that compute nothing with ``params`` (all
        of them, checked): name -> the setting that makes it so (``Param.inert``), in
        ``PARAMS`` order."""
        full = {**cls.defaults(), **params}
        reasons = {name: param.inert(full) for name, param in cls.PARAMS.items()
                   if name in given and param.inert is not None}
        return {name: why for name, why in reasons.items() if why is not None}

    @classmethod
    def describe_params(cls) -> list[str]:
        """One line per parameter for ``--help``: ``name=default  meaning; valid values``."""
        settings = {k: f"{k}={p.default}" for k, p in cls.PARAMS.items()}
        width = max(map(len, settings.values()), default=0)
        return [f"{settings[k].ljust(width)}  {p.help + '; ' if p.help else ''}{p.describe()}"
                for k, p in cls.PARAMS.items()]

    # --- evolution -------------------------------------------------------------------
    @abstractmethod
    def random(self, n: int, rng: np.random.Generator) -> Genomes:
        """``n`` random genomes (the initial population)."""

    @abstractmethod
    def vary(self, parents: Genomes, rng: np.random.Generator, generation: int) -> Genomes:
        """One offspring per parent (mutation, and crossover where the encoding has it)."""

    # Whether ``vary_scored`` reads the parents' confidences (the mutation emitter then
    # computes them; otherwise it passes None and skips the work).
    uses_parent_confidence: bool = False

    def vary_scored(self, parents: Genomes, confidences: np.ndarray | None, rng: np.random.Generator,
                    generation: int) -> Genomes:
        """``vary``, told each parent's confidence for the class it was chosen for (None where
        the archive holds raw scores, or the encoding does not use them): an encoding may vary
        nearly-fooling parents differently. By default, ``vary``."""
        return self.vary(parents, rng, generation)

    @abstractmethod
    def render(self, genomes: Genomes) -> torch.Tensor:
        """Images of a batch: ``B×C×H×W`` uint8 on ``self.device`` (exactly what is saved)."""

    # --- batches and the archive's store ---------------------------------------------------
    @abstractmethod
    def take(self, genomes: Genomes, index: np.ndarray) -> Genomes:
        """The sub-batch ``genomes[index]`` (index may repeat)."""

    def rows(self, genomes: Genomes, start: int, stop: int) -> Genomes:
        """The consecutive sub-batch ``genomes[start:stop]`` (a view where the encoding can)."""
        return self.take(genomes, np.arange(start, stop))

    @abstractmethod
    def empty_store(self, size: int) -> Genomes:
        """A store with ``size`` empty slots."""

    @abstractmethod
    def put(self, store: Genomes, slots: np.ndarray, genomes: Genomes, index: np.ndarray) -> Genomes:
        """Writes ``genomes[index[i]]`` into ``store[slots[i]]``; returns the store."""

    # --- saving (no pickle: plain arrays + JSON) ------------------------------------------
    @abstractmethod
    def pack(self, store: Genomes, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The genomes in ``store[slots]`` as named NumPy arrays (saved as ``.npy``)."""

    @abstractmethod
    def unpack(self, arrays: dict[str, np.ndarray], slots: np.ndarray, size: int) -> Genomes:
        """A store of ``size`` slots with the packed genomes placed at ``slots``."""

    # --- gradient refinement (``--refine grad``; encodings with ``render_differentiable``) ---
    def refine_graphs(self, genomes: Genomes) -> Genomes:
        """The genomes the refine emitter steps, made from the champions it picked: by
        default the champions themselves (cppn's ``refine_links=dense`` adds read-out links)."""
        return genomes

    def refine_mask(self, genomes: Genomes) -> np.ndarray | None:
        """Which of ``weights_of(genomes)``'s values the refine emitter moves: ``None`` for
        all of them (the default), else a bool array."""
        return None

    # --- vector view (only where ``vector_genomes``) -----------------------------------
    def to_vectors(self, genomes: Genomes) -> torch.Tensor:
        """Genomes as a float tensor (``B×...``), for arithmetic on mutation steps."""
        raise NotImplementedError(f"{self.name} genomes are not vectors")

    def from_vectors(self, vectors: torch.Tensor) -> Genomes:
        """Genomes from vectors, clipped and quantised to valid genomes."""
        raise NotImplementedError(f"{self.name} genomes are not vectors")

    def concat(self, first: Genomes, second: Genomes) -> Genomes:
        """One batch of ``first`` followed by ``second``."""
        raise NotImplementedError(f"{self.name} genomes cannot be concatenated")

    def state_dict(self) -> dict:
        """JSON-able counters the encoding carries across generations (id counters...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` returned."""

    def config(self) -> dict:
        """The encoding's parameters, as recorded in the run config."""
        return {}
