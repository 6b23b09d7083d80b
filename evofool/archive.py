"""``ClassArchive``: MAP-Elites with one cell per class (multi-task MAP-Elites)."""

from __future__ import annotations

import numpy as np
import torch

from evofool.devices import copy_rows_, take_rows
from evofool.encodings.base import Encoding, Genomes
from evofool.models.outputs import FITNESS_KINDS, LOG_PROB, SCORE


# The checkpoint array holding the fitness: its name predates unit runs, and checkpoints
# written since the first release must keep resuming.
FITNESS_ARRAY = "archive.log_probs"


class ClassArchive:
    """One elite per class: its genome, image, fitness and the generation it was found.

    ``fitness`` (``K`` float64, ``-inf`` for empty cells) is what champions compete on:
    for classes (``fitness_kind == "log_prob"``) the float64 log-probability (see
    ``evofool.models.outputs.stable_log_softmax``), which lets champions keep improving
    after the softmax probability rounds to 1.0, and whose reported confidence is the
    probability; for units of activation maximisation (``"score"``) the raw activation,
    reported as it is.

    Args:
        num_classes: Number of cells K.
        encoding: The encoding whose genomes are stored.
        device: Where the fitness and image tensors live.
        fitness_kind: ``log_prob`` or ``score`` (``evofool.models.outputs.fitness_kind``).
    """

    def __init__(self, num_classes: int, encoding: Encoding, device: torch.device | str = "cpu",
                 fitness_kind: str = LOG_PROB) -> None:
        if fitness_kind not in FITNESS_KINDS:
            raise ValueError(f"fitness_kind must be 'log_prob' or 'score', not {fitness_kind!r}")
        self.fitness_kind = fitness_kind
        self.num_classes = int(num_classes)
        self.encoding = encoding
        self.device = torch.device(device)
        self.fitness = torch.full((self.num_classes,), -torch.inf, dtype=torch.float64, device=self.device)
        self.generation = torch.full((self.num_classes,), -1, dtype=torch.int64, device=self.device)
        self.images = torch.zeros((self.num_classes, *encoding.image_shape), dtype=torch.uint8,
                                  device=self.device)
        self.genomes: Genomes = encoding.empty_store(self.num_classes)
        # For each class the last update improved (in its order), the batch row that took it.
        self.last_winners = np.empty(0, dtype=np.int64)

    # --- queries ------------------------------------------------------------------
    @property
    def log_probs(self) -> torch.Tensor:
        """``fitness`` by its old name (the engine's tests and benchmarks/ray.py read it)."""
        return self.fitness

    @property
    def is_probability(self) -> bool:
        """Whether the reported values are probabilities (classes), not raw scores (units)."""
        return self.fitness_kind == LOG_PROB

    @property
    def occupied(self) -> np.ndarray:
        """Indices of classes that have a champion (sorted)."""
        # NumPy on the host copy: ~3x cheaper than torch's nonzero for K = 10 (asked twice a generation).
        return np.flatnonzero(np.isfinite(self.fitness.cpu().numpy()))

    def confidences(self) -> np.ndarray:
        """What is reported per cell, float64: the champion's probability (0 for empty cells),
        or for a ``score`` archive the raw score itself (``-inf`` for empty cells)."""
        if self.fitness_kind == SCORE:
            return self.fitness.cpu().numpy().copy()
        return torch.exp(self.fitness).cpu().numpy()

    def genomes_of(self, classes: np.ndarray) -> Genomes:
        """The champions' genomes of ``classes`` (indices may repeat)."""
        return self.encoding.take(self.genomes, np.asarray(classes, dtype=np.int64))

    # --- update -----------------------------------------------------------------------
    def update(self, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
               generation: int) -> np.ndarray:
        """Adds a scored batch: each offspring takes every cell where it beats the champion.

        Vectorised over the batch: per class the best offspring is found with one
        ``max``; it replaces the champion where strictly better (ties keep the old one).

        Args:
            genomes: The batch's genomes (B of them).
            images: Their rendered images, ``B×C×H×W`` uint8.
            fitness: ``B×K`` fitness (log-probabilities, or scores).
            generation: The generation the batch belongs to.

        Returns:
            The classes whose champion changed, sorted.
        """
        if fitness.shape[0] == 0:
            self.last_winners = np.empty(0, dtype=np.int64)
            return np.empty(0, dtype=np.int64)
        best, who = fitness.to(self.device, torch.float64).max(dim=0)
        improved = best > self.fitness
        cells = torch.nonzero(improved).flatten()
        if cells.numel() == 0:
            self.last_winners = np.empty(0, dtype=np.int64)
            return np.empty(0, dtype=np.int64)
        winners = who[cells]
        self.last_winners = winners.cpu().numpy()  # the batch row that took each improved cell
        self.fitness[cells] = best[cells]
        self.generation[cells] = generation
        cells_np = cells.cpu().numpy()
        copy_rows_(self.images, cells_np, take_rows(images, winners.to(images.device)))
        self.genomes = self.encoding.put(self.genomes, cells_np, genomes, self.last_winners)
        return cells_np

    # --- saving ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything in the archive as named NumPy arrays (genomes packed by the encoding)."""
        slots = self.occupied
        out = {
            FITNESS_ARRAY: self.fitness.cpu().numpy(),
            "archive.generation": self.generation.cpu().numpy(),
            "archive.images": self.images.cpu().numpy(),
        }
        for key, value in self.encoding.pack(self.genomes, slots).items():
            out[f"genomes.{key}"] = np.ascontiguousarray(value)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restores what ``arrays`` returned.

        Raises:
            ValueError: where the arrays do not fit this archive.
        """
        fitness = np.asarray(arrays[FITNESS_ARRAY])
        generation = np.asarray(arrays["archive.generation"])
        images = np.asarray(arrays["archive.images"])
        if fitness.shape != (self.num_classes,) or fitness.dtype != np.float64:
            raise ValueError(f"archive has {fitness.shape} fitness values, expected {self.num_classes}")
        if generation.shape != (self.num_classes,) or images.shape != tuple(self.images.shape):
            raise ValueError("archive arrays do not match the model's classes or image shape")
        self.fitness = torch.from_numpy(fitness.copy()).to(self.device)
        self.generation = torch.from_numpy(generation.astype(np.int64)).to(self.device)
        self.images = torch.from_numpy(images.astype(np.uint8)).to(self.device)
        packed = {k[len("genomes."):]: v for k, v in arrays.items() if k.startswith("genomes.")}
        self.genomes = self.encoding.unpack(packed, self.occupied, self.num_classes)
