"""``torchvision:NAME``: a pretrained torchvision classifier (e.g. ``torchvision:resnet18``).

torchvision is optional (``pip install 'evofool[vision]'``) and imported only here,
only when such a spec is loaded.
"""

from __future__ import annotations

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize

INSTALL_HINT = "torchvision is not installed; install it with pip install 'evofool[vision]'"


def load_torchvision(name: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """Loads torchvision model ``name`` with its default pretrained weights.

    Preprocessing is the weights' mean/std normalisation; the input shape is the
    weights' centre-crop size (3×224×224 for most), and ``resize_inputs`` is set so
    ``classify`` resizes photos of other sizes.

    Raises:
        EvofoolError: torchvision missing, unknown model name, or weights not obtainable.
    """
    try:
        import torchvision
    except ImportError:
        raise EvofoolError(INSTALL_HINT) from None
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models)))
        raise EvofoolError(f"torchvision has no classification model {name!r}; known: {known}") from None
    try:
        module = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError: offline, proxy, ...
        raise EvofoolError(f"could not load the weights of torchvision:{name} ({exc})") from None
    transform = weights.transforms()
    crop = transform.crop_size[0] if isinstance(transform.crop_size, (list, tuple)) else transform.crop_size
    categories = weights.meta.get("categories")
    if not categories:
        raise EvofoolError(f"torchvision:{name} weights carry no class names")
    return Classifier(
        spec=spec, module=module.to(device).eval(), input_shape=(3, int(crop), int(crop)),
        class_names=list(categories), preprocess=Normalize(list(transform.mean), list(transform.std)),
        resize_inputs=True,
        meta={"weights": str(weights), "resize_size": list(getattr(transform, "resize_size", []) or [])})
