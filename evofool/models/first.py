"""``first:N:SPEC``: only the first N classes of a classifier as cells.

A network retrained with an extra class (``evofool retrain``'s ``fooling`` class, the
last one) is attacked on its real classes only: each cell's confidence is that class's
probability under the full softmax, so the mass on the dropped classes stays out of
every cell.
"""

from __future__ import annotations

import torch
from torch import nn

from evofool.errors import EvofoolError
from evofool.models import PREFIX_LOADERS, load_model
from evofool.models.base import Classifier
from evofool.models.outputs import PROBS, SCORES, probabilities_from_outputs

FIRST_USAGE = PREFIX_LOADERS["first"].usage  # as 'evofool models' lists it


class FirstClasses(nn.Module):
    """An inner classifier's softmax, restricted to its first ``n`` columns (float64 probabilities).

    The columns are *not* renormalised: the probability of the dropped classes (the
    ``fooling`` class) counts against every kept one.
    """

    def __init__(self, inner: Classifier, n: int) -> None:
        super().__init__()
        self.net = inner.module
        self.n = int(n)
        self.inner_outputs = inner.outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities_from_outputs(self.net(x), self.inner_outputs)[:, :self.n]


def first_classes(inner: Classifier, n: int, spec: str) -> Classifier:
    """``inner`` with only its first ``n`` classes as outputs (``outputs="probs"``).

    Raises:
        EvofoolError: ``n`` out of range, or an inner model with raw unit scores.
    """
    if inner.outputs == SCORES:
        raise EvofoolError(f"{spec}: {inner.spec} returns raw unit scores, not class probabilities")
    if not 1 <= n <= inner.num_classes:
        raise EvofoolError(f"{spec}: N must lie in 1..{inner.num_classes} ({inner.spec} has "
                           f"{inner.num_classes} classes), got {n}")
    return Classifier(spec=spec, module=FirstClasses(inner, n), input_shape=tuple(inner.input_shape),
                      class_names=list(inner.class_names[:n]), preprocess=inner.preprocess, outputs=PROBS,
                      resize_inputs=inner.resize_inputs,
                      meta={**inner.meta, "inner": inner.spec, "dropped": list(inner.class_names[n:])})


def load_first(arg: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """Loads ``first:N:SPEC`` (the registry's ``first`` prefix loader)."""
    count, sep, inner = arg.partition(":")
    if not sep or not inner.strip() or not count.strip().isdigit():
        raise EvofoolError(f"model spec {spec!r} is not {FIRST_USAGE} (e.g. first:10:lenet:model.safetensors)")
    return first_classes(load_model(inner.strip(), device), int(count), spec)


__all__ = ["FIRST_USAGE", "FirstClasses", "first_classes", "load_first"]
