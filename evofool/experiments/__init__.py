"""The papers' other experiments, next to evolution.

* ``ascent`` — fooling images by gradient ascent on the class log-probability
  (Nguyen, Yosinski & Clune 2015, after Simonyan et al. 2013).
* ``perturb`` — Szegedy et al. (2013)'s minimal adversarial perturbations by
  box-constrained L-BFGS.

Both score images exactly as saved (8-bit), like every other part of evofool.
"""

from __future__ import annotations

import torch

from evofool.errors import EvofoolError
from evofool.evaluator import call_model, check_model_output
from evofool.models.base import Classifier, class_named
from evofool.models.outputs import SCORES, fitness_from_outputs


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] → the uint8 image that is saved (round to nearest)."""
    return x.detach().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def class_log_probs(classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Differentiable float64 fitness (``N×K``: log-probabilities, or unit scores) of float pixels in [0, 1].

    float64 keeps the gradient of a class near probability 1 (``1 - p`` ~ 1e-6) exact.
    """
    raw = call_model(classifier, x)
    check_model_output(raw, classifier, x.shape[0])
    return fitness_from_outputs(raw, classifier.outputs, differentiable=True)


def require_probabilities(classifier: Classifier, command: str) -> None:
    """Raises ``EvofoolError`` for a model whose outputs are not class probabilities.

    Confidence targets and "classified as" only mean something for classifiers, not for
    raw unit activations (``unit:`` specs).
    """
    if classifier.outputs == SCORES:
        raise EvofoolError(f"{command} needs a classifier; {classifier.spec!r} outputs raw unit "
                           f"activations, not class probabilities")


def parse_classes(text: str | None, class_names: list[str]) -> list[int]:
    """``"0,3,7"`` or ``"cat,dog"`` → class indices (names win over numbers); ``None`` → all.

    Raises:
        EvofoolError: an unknown name, a name several classes share, an index out of range,
            or a repeated class.
    """
    if text is None or not text.strip():
        return list(range(len(class_names)))
    out: list[int] = []
    for item in (s.strip() for s in text.split(",")):
        k = class_named(item, class_names)
        if k is None:
            if not item.lstrip("-").isdigit():
                raise EvofoolError(f"unknown class {item!r} (give indices or class names, comma-separated)")
            k = int(item)
            if not 0 <= k < len(class_names):
                raise EvofoolError(f"class {k} is out of range: the model has classes 0..{len(class_names) - 1}")
        if k in out:
            raise EvofoolError(f"class {item!r} is listed twice")
        out.append(k)
    return out


__all__ = ["class_log_probs", "parse_classes", "quantise", "require_probabilities"]
