"""``torchscript:PATH``: any TorchScript classifier plus a JSON sidecar describing its input.

Sidecar (``PATH + ".json"``, or ``PATH`` with its suffix replaced by ``.json``)::

    {"input_shape": [C, H, W], "class_names": [...],
     "mean": [...], "std": [...],        # optional, one per channel
     "scale": 1.0,                       # optional, multiplies [0, 1] pixels first
     "outputs": "logits"}                # optional, or "probs"

Preprocessing is ``(x * scale - mean) / std`` on [0, 1] pixels.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize


def find_sidecar(path: Path) -> Path:
    """The sidecar of ``path``: ``model.pt.json`` preferred, else ``model.json``."""
    for candidate in (Path(str(path) + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    raise EvofoolError(f"TorchScript model {path} has no metadata sidecar: create "
                       f"{path}.json with input_shape and class_names")


def read_sidecar(side: Path) -> dict:
    """Parses and validates a sidecar; returns it with defaults filled in."""
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvofoolError(f"{side} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise EvofoolError(f"{side} must hold a JSON object")
    shape = meta.get("input_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise EvofoolError(f"{side}: input_shape must be [C, H, W] (positive integers)")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names:
        raise EvofoolError(f"{side}: class_names must be a non-empty list")
    channels = shape[0]
    for key, default in (("mean", 0.0), ("std", 1.0)):
        value = meta.get(key, [default] * channels)
        if not isinstance(value, list) or len(value) != channels:
            raise EvofoolError(f"{side}: {key} must list {channels} numbers (one per channel)")
        meta[key] = [float(v) for v in value]
    if any(s == 0 for s in meta["std"]):
        raise EvofoolError(f"{side}: std must not contain 0")
    meta["scale"] = float(meta.get("scale", 1.0))
    meta.setdefault("outputs", "logits")
    if meta["outputs"] not in ("logits", "probs"):
        raise EvofoolError(f"{side}: outputs must be 'logits' or 'probs'")
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
