"""``torchscript:PATH``: any TorchScript classifier plus a JSON sidecar describing its input.

Sidecar (``PATH + ".json"``, or ``PATH`` with its suffix replaced by ``.json``)::

    {"input_shape": [C, H, W], "class_names": [...],
     "mean": [...], "std": [...],        # optional, one per channel
     "scale": 1.0,                       # optional, multiplies [0, 1] pixels first
     "outputs": "logits"}                # optional, or "probs"

Preprocessing is ``(x * scale - mean) / std`` on [0, 1] pixels.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize
from evofool.values import CLASS_NAMES, ConfigError, Param, check_known, read_json_object


def find_sidecar(path: Path) -> Path:
    """The sidecar of ``path``: ``model.pt.json`` preferred, else ``model.json``."""
    for candidate in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    raise EvofoolError(f"TorchScript model {path} has no metadata sidecar: create "
                       f"{path}.json with input_shape and class_names")


# H and W at most this: a probe (and a population) of larger images is a wrong sidecar
# long before it is a model (ImageNet models take 224-600).
MAX_IMAGE_SIDE = 4096
SIDECAR_KEYS = ("input_shape", "class_names", "mean", "std", "scale", "outputs")
_INPUT_SHAPE = Param(list, item=Param(int, low=1, high=MAX_IMAGE_SIDE), length=3)
_CHANNELS = Param(int, choices=(1, 3))  # what the encodings render and PNGs hold


def _optional_keys(channels: int) -> dict[str, Param]:
    """The keys a sidecar may leave out, with their defaults (mean and std: one per channel)."""
    return {"mean": Param(list, [0.0] * channels, item=Param(float), length=channels),
            "std": Param(list, [1.0] * channels, item=Param(float, low=0.0, low_open=True), length=channels),
            "scale": Param(float, 1.0, low=0.0, low_open=True),
            "outputs": Param(str, "logits", choices=("logits", "probs"))}


def read_sidecar(side: Path) -> dict:
    """Parses and validates a sidecar; returns it with defaults filled in.

    Raises:
        EvofoolError: one line naming the file and the key: not a small regular UTF-8 JSON
            file, an unknown or missing key, or a value of the wrong kind, length or range.
    """
    meta = read_json_object(side)
    where = f"{side}: "
    check_known(meta, SIDECAR_KEYS, "key", where)
    for key, param in (("input_shape", _INPUT_SHAPE), ("class_names", CLASS_NAMES)):
        if key not in meta:
            raise ConfigError(f"{where}{key} is missing (it must be {param.describe()})")
        param.check(key, meta[key], where)
    channels = meta["input_shape"][0]
    _CHANNELS.check("input_shape[0] (channels)", channels, where)
    for key, param in _optional_keys(channels).items():
        meta.setdefault(key, param.default)
        param.check(key, meta[key], where)
    meta["mean"] = [float(v) for v in meta["mean"]]
    meta["std"] = [float(v) for v in meta["std"]]
    meta["scale"] = float(meta["scale"])
    return meta


def _check_outputs(module: torch.nn.Module, norm: Normalize, meta: dict, file: Path,
                   device: torch.device | str) -> None:
    """One forward pass on a blank image, so a wrong sidecar fails now, clearly, not mid-run."""
    probe = torch.zeros(1, *meta["input_shape"], device=device)
    try:
        with torch.inference_mode():
            out = module(norm(probe))
    except Exception as exc:  # TorchScript raises many types; all mean "does not fit"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvofoolError(f"{file} fails on a 1×{'×'.join(map(str, meta['input_shape']))} "
                           f"input from its sidecar ({first})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != len(meta["class_names"]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EvofoolError(f"{file} outputs {shape} but its sidecar lists "
                           f"{len(meta['class_names'])} class names")


def load_torchscript(path: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """Loads ``torchscript:PATH``.

    Raises:
        EvofoolError: Missing file or sidecar, a file that is not TorchScript, a bad sidecar.
    """
    file = Path(path)
    if not file.is_file():
        raise EvofoolError(f"TorchScript model file {file} does not exist")
    meta = read_sidecar(find_sidecar(file))
    # Check the container first: torch.jit.load's errors on random files are long C++ dumps.
    if not zipfile.is_zipfile(file):
        raise EvofoolError(f"{file} is not a TorchScript archive (save it with torch.jit.save)")
    try:
        with warnings.catch_warnings():
            # Recent torch deprecates TorchScript; loading user archives is this module's job.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            module = torch.jit.load(str(file), map_location=device)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvofoolError(f"{file} is not a TorchScript archive ({first})") from None
    module.eval()
    norm = Normalize(meta["mean"], meta["std"], meta["scale"])
    _check_outputs(module, norm, meta, file, device)
    return Classifier(spec=spec, module=module, input_shape=tuple(meta["input_shape"]),
                      class_names=[str(n) for n in meta["class_names"]], preprocess=norm,
                      outputs=meta["outputs"], meta={"file": str(file), **meta})
