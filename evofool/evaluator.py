"""Batched scoring of images: one forward pass per chunk, no per-image Python work."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from evofool.models.base import Classifier


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bfloat16`` autocast on a CUDA GPU that supports it, else ``float32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1]; float images are passed through as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def stable_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax in float64 that stays informative for near-certain classes.

    For the top class, ``log p = -log1p(sum_{j != top} exp(x_j - x_top))``: plain
    log-softmax rounds to exactly 0 once the logit gap passes ~37 (float64) or ~17
    (float32), after which champions could no longer improve. This form keeps
    resolving differences until the gap reaches ~700.
    """
    x = logits.to(torch.float64)
    top_value, top = x.max(dim=1, keepdim=True)
    shifted = x - top_value                      # log-sum-exp, shifted by the top logit
    rest = shifted.exp().scatter_(1, top, 0.0).sum(dim=1, keepdim=True)
    # log Σ_j exp(shifted_j) = log(1 + rest): log1p keeps the top class's -rest exact.
    return shifted.sub_(torch.log1p(rest))


@dataclass
class Scores:
    """Per-class scores of a batch: ``N×K`` float64 log-probabilities and probabilities."""

    log_probs: torch.Tensor
    probs: torch.Tensor


class BatchEvaluator:
    """Scores batches of images with a classifier.

    Args:
        classifier: The model and its metadata.
        device: Where to run; ``None`` picks ``cuda`` if available, else CPU.
        max_batch: Largest chunk sent through the model at once. Halved (and remembered)
            whenever a chunk runs out of device memory, so the batch sizes itself to memory.
        precision: ``float32``, or ``bfloat16``/``float16`` autocast for the forward pass
            (logits are then taken to float32 and the log-softmax done in float64);
            ``auto``: bfloat16 on a CUDA GPU that has it, float32 elsewhere.
    """

    def __init__(self, classifier: Classifier, device: torch.device | str | None = None,
                 max_batch: int = 1024, precision: str = "auto") -> None:
        self.classifier = classifier
        self.device = torch.device(device) if device is not None else default_device()
        self.max_batch = int(max_batch)
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.precision = resolve_precision(precision, self.device)
        classifier.module.to(self.device).eval()

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def check_shape(self, images: torch.Tensor) -> None:
        """Raises ``EvofoolError`` unless ``images`` is ``N×C×H×W`` of the model's shape."""
        from evofool.errors import EvofoolError

        expected = tuple(self.classifier.input_shape)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise EvofoolError(
                f"images of shape {tuple(images.shape[1:])} do not fit model "
                f"{self.classifier.spec}, which takes C×H×W = {expected}")

    @torch.inference_mode()
    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class log-probabilities (``N×K`` float64) of uint8 or [0, 1] float images."""
        self.check_shape(images)
        out = []
        start = 0
        while start < images.shape[0]:
            chunk = to_unit_float(images[start:start + self.max_batch].to(self.device, non_blocking=True))
            try:
                raw = self._forward(chunk)
            except torch.OutOfMemoryError:
                if chunk.shape[0] == 1:
                    raise
                self.max_batch = max(1, chunk.shape[0] // 2)
                del chunk
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(f"out of device memory: evaluating in chunks of {self.max_batch} from now on",
                              RuntimeWarning, stacklevel=2)
                continue
            start += chunk.shape[0]
            if self.classifier.outputs == "scores":
                # Activation maximisation: the fitness is the raw score itself.
                out.append(raw.to(torch.float64))
            elif self.classifier.outputs == "probs":
                out.append(torch.log(raw.to(torch.float64).clamp_min(1e-300)))
            else:
                out.append(stable_log_softmax(raw.float()))
        if not out:
            return torch.empty(0, self.num_classes, device=self.device, dtype=torch.float64)
        return torch.cat(out)

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs for one chunk of [0, 1] images, at the chosen precision."""
        if self.precision == "float32":
            return self.classifier.module(self.classifier.preprocess(chunk))
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return self.classifier.module(self.classifier.preprocess(chunk))

    def evaluate(self, images: torch.Tensor) -> Scores:
        """Log-probabilities and probabilities (softmax confidences) of a batch."""
        logp = self.log_probs(images)
        return Scores(log_probs=logp, probs=logp.exp())
