"""``ClassArchive``: MAP-Elites with one cell per class (multi-task MAP-Elites)."""

from __future__ import annotations

import numpy as np
import torch

from evofool.encodings.base import Encoding, Genomes


class ClassArchive:
    """One elite per class: its genome, image, fitness and the generation it was found.

    Fitness is the class's float64 log-probability (see
    ``evofool.evaluator.stable_log_softmax``): comparing on it lets champions keep
    improving after the softmax probability rounds to 1.0. Confidence, as reported,
    is the probability.

    Args:
        num_classes: Number of cells K.
        encoding: The encoding whose genomes are stored.
        device: Where the fitness and image tensors live.
        fitness: ``log_prob`` (classes; confidence = exp(fitness)) or ``score`` (units of
            activation maximisation; the reported value is the raw score).
    """

    def __init__(self, num_classes: int, encoding: Encoding, device: torch.device | str = "cpu",
                 fitness: str = "log_prob") -> None:
        if fitness not in ("log_prob", "score"):
            raise ValueError(f"fitness must be 'log_prob' or 'score', not {fitness!r}")
        self.fitness = fitness
        self.num_classes = int(num_classes)
        self.encoding = encoding
        self.device = torch.device(device)
        self.log_probs = torch.full((self.num_classes,), -torch.inf, dtype=torch.float64, device=self.device)
        self.generation = torch.full((self.num_classes,), -1, dtype=torch.int64, device=self.device)
        self.images = torch.zeros((self.num_classes, *encoding.image_shape), dtype=torch.uint8,
                                  device=self.device)
        self.genomes: Genomes = encoding.empty_store(self.num_classes)

    # --- queries ------------------------------------------------------------------
    @property
    def occupied(self) -> np.ndarray:
        """Indices of classes that have a champion (sorted)."""
        return torch.nonzero(torch.isfinite(self.log_probs)).flatten().cpu().numpy()

    def confidences(self) -> np.ndarray:
        """Champion probability per class (0 for empty cells), float64.

        For ``fitness="score"`` archives: the raw score (``-inf`` for empty cells).
        """
        if self.fitness == "score":
            return self.log_probs.cpu().numpy().copy()
        return torch.exp(self.log_probs).cpu().numpy()

    def genomes_of(self, classes: np.ndarray) -> Genomes:
        """The champions' genomes of ``classes`` (indices may repeat)."""
        return self.encoding.take(self.genomes, np.asarray(classes, dtype=np.int64))

    # --- update -----------------------------------------------------------------------
    def update(self, genomes: Genomes, images: torch.Tensor, log_probs: torch.Tensor,
               generation: int) -> np.ndarray:
        """Adds a scored batch: each offspring takes every cell where it beats the champion.

        Vectorised over the batch: per class the best offspring is found with one
        ``max``; it replaces the champion where strictly better (ties keep the old one).

        Args:
            genomes: The batch's genomes (B of them).
            images: Their rendered images, ``B×C×H×W`` uint8.
            log_probs: ``B×K`` log-probabilities.
            generation: The generation the batch belongs to.

        Returns:
            The classes whose champion changed, sorted.
        """
        if log_probs.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        best, who = log_probs.to(self.device, torch.float64).max(dim=0)
        improved = best > self.log_probs
        cells = torch.nonzero(improved).flatten()
        if cells.numel() == 0:
            return np.empty(0, dtype=np.int64)
        winners = who[cells]
        self.log_probs[cells] = best[cells]
        self.generation[cells] = generation
        self.images[cells] = images[winners.to(images.device)].to(self.device)
        cells_np = cells.cpu().numpy()
        self.genomes = self.encoding.put(self.genomes, cells_np, genomes, winners.cpu().numpy())
        return cells_np

    # --- saving ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything in the archive as named NumPy arrays (genomes packed by the encoding)."""
        slots = self.occupied
        out = {
            "archive.log_probs": self.log_probs.cpu().numpy(),
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
        log_probs = np.asarray(arrays["archive.log_probs"])
        generation = np.asarray(arrays["archive.generation"])
        images = np.asarray(arrays["archive.images"])
        if log_probs.shape != (self.num_classes,) or log_probs.dtype != np.float64:
            raise ValueError(f"archive has {log_probs.shape} fitness values, expected {self.num_classes}")
        if generation.shape != (self.num_classes,) or images.shape != tuple(self.images.shape):
            raise ValueError("archive arrays do not match the model's classes or image shape")
        self.log_probs = torch.from_numpy(log_probs.copy()).to(self.device)
        self.generation = torch.from_numpy(generation.astype(np.int64)).to(self.device)
        self.images = torch.from_numpy(images.astype(np.uint8)).to(self.device)
        packed = {k[len("genomes."):]: v for k, v in arrays.items() if k.startswith("genomes.")}
        self.genomes = self.encoding.unpack(packed, self.occupied, self.num_classes)
