"""What every model spec resolves to: a classifier plus the metadata evofool needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from evofool.errors import EvofoolError


def identity(x: torch.Tensor) -> torch.Tensor:
    """Preprocessing for models trained directly on [0, 1] pixels."""
    return x


def class_named(name: str, class_names: list[str], ignore_case: bool = False) -> int | None:
    """The index of the class called ``name`` (``None``: none is), for ``--classes`` lists.

    Raises:
        EvofoolError: several classes share the name (ImageNet has two "crane" and two
            "maillot"): the indices are listed, to give one of them.
    """
    key = name.lower() if ignore_case else name
    matches = [i for i, n in enumerate(class_names) if (n.lower() if ignore_case else n) == key]
    if len(matches) > 1:
        raise EvofoolError(f"class name {name!r} is shared by classes {', '.join(map(str, matches))}: "
                           f"give the index instead")
    return matches[0] if matches else None


@dataclass
class Classifier:
    """A ready-to-use image classifier.

    Attributes:
        spec: The model spec string it was loaded from (e.g. ``"lenet-mnist"``).
        module: The torch module; maps preprocessed ``N×C×H×W`` float input to logits.
        input_shape: ``(C, H, W)`` of the images the model takes.
        class_names: One name per output class, in output order.
        preprocess: Maps float pixels in ``[0, 1]`` (``N×C×H×W``) to model input.
        outputs: ``"logits"`` (softmax is applied by the evaluator) or ``"probs"`` for
            models that already return probabilities (ensembles).
        resize_inputs: True for photo models (ImageNet): image files of another size are
            resized and centre-cropped by ``classify``; False: a wrong size is an error.
        meta: Free-form extra facts (weights file, training seed, accuracy...).
    """

    spec: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    class_names: list[str]
    preprocess: Callable[[torch.Tensor], torch.Tensor] = identity
    outputs: str = "logits"
    resize_inputs: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.input_shape[0]

    def to(self, device: torch.device | str) -> "Classifier":
        """Moves the module to ``device`` in place and returns self."""
        self.module.to(device)
        return self
