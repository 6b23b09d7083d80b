"""LeNet-5 as in Caffe's MNIST example, plus safetensors save/load helpers.

Architecture (Caffe ``examples/mnist/lenet_train_test.prototxt``)::

    conv1 20@5×5 → max-pool 2 → conv2 50@5×5 → max-pool 2 → ip1 500 → ReLU → ip2 K

Caffe feeds pixels scaled by 1/256; we feed pixels in [0, 1] directly, so the
preprocessing is the identity.

A weights file ``NAME.safetensors`` holds the tensors only (no pickle); facts about
it (class names, training command, seed, accuracy) live in the JSON sidecar
``NAME.json`` next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.values import CLASS_NAMES, read_json_object

INPUT_SHAPE = (1, 28, 28)


class LeNet(nn.Module):
    """Caffe's MNIST LeNet; layer names follow the prototxt.

    Args:
        num_classes: Outputs of the last layer (10 for MNIST; 11 with an extra class).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)   # 28 → 24
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)  # 12 → 8
        self.ip1 = nn.Linear(50 * 4 * 4, 500)
        self.ip2 = nn.Linear(500, num_classes)

    @property
    def num_classes(self) -> int:
        return self.ip2.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N×1×28×28`` pixels in [0, 1] → ``N×K`` logits."""
        x = F.max_pool2d(self.conv1(x), 2)  # Caffe's LeNet has no ReLU after the convs
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.ip1(x.flatten(1)))
        return self.ip2(x)


def sidecar_path(weights: str | Path) -> Path:
    """The JSON metadata file that accompanies a weights file (same name, ``.json``)."""
    return Path(weights).with_suffix(".json")


def save_lenet(model: LeNet, path: str | Path, meta: dict | None = None) -> Path:
    """Writes ``model``'s weights as safetensors and ``meta`` as the JSON sidecar.

    Args:
        model: The trained network.
        path: Destination ``.safetensors`` file; its folder is created if needed.
        meta: JSON-serialisable facts (class names, training command, accuracy...).

    Returns:
        The path of the sidecar written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "arch": "lenet"})
    side = sidecar_path(path)
    side.write_text(json.dumps(meta or {}, indent=2) + "\n")
    return side


def load_lenet(path: str | Path, device: torch.device | str = "cpu") -> tuple[LeNet, dict]:
    """Reads a LeNet weights file and its sidecar (if any).

    The number of classes comes from the weights themselves.

    Returns:
        ``(model in eval mode on device, sidecar dict or {})``.

    Raises:
        EvofoolError: Missing file, not safetensors, or not LeNet-shaped tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise EvofoolError(f"LeNet weights file {path} does not exist")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise EvofoolError(f"{path} is not a safetensors weights file ({exc})") from None
    if "ip2.weight" not in tensors:
        raise EvofoolError(f"{path} does not hold LeNet weights (no ip2.weight tensor)")
    model = LeNet(num_classes=tensors["ip2.weight"].shape[0])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise EvofoolError(f"{path} does not hold LeNet weights: {first}") from None
    side = sidecar_path(path)
    meta = read_sidecar(side) if side.exists() else {}
    return model.to(device).eval(), meta


def read_sidecar(side: Path) -> dict:
    """A weights file's sidecar: a JSON object of free-form facts; ``class_names``, where
    given, a non-empty list of strings.

    Raises:
        EvofoolError: one line naming the file (and the key): not a small regular UTF-8
            file, not a JSON object, bad class names.
    """
    meta = read_json_object(side)
    if "class_names" in meta:
        CLASS_NAMES.check("class_names", meta["class_names"], where=f"{side}: ")
    return meta


def lenet_classifier(path: str | Path, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """A ``Classifier`` for a LeNet weights file; class names from the sidecar or ``"0".."K-1"``."""
    model, meta = load_lenet(path, device)
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise EvofoolError(f"{sidecar_path(path)} lists {len(names)} class names "
                           f"but the weights have {model.num_classes} outputs")
    return Classifier(spec=spec, module=model, input_shape=INPUT_SHAPE,
                      class_names=[str(n) for n in names],
                      meta={"weights": str(path), **meta})
