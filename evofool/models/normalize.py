"""Per-channel mean/std input normalisation, shared by the TorchScript and torchvision loaders."""

from __future__ import annotations

import torch


class Normalize(torch.nn.Module):
    """``(x * scale - mean) / std`` per channel, usable as a ``Classifier.preprocess``."""

    def __init__(self, mean: list[float], std: list[float], scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Follow x's device: the evaluator moves only the classifier's module.
        return (x * self.scale - self.mean.to(x.device)) / self.std.to(x.device)
