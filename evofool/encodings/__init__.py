"""Encodings: how a genome becomes an image. ``make_encoding`` builds one by name."""

from __future__ import annotations

import importlib

import torch

from evofool.encodings.base import Encoding
from evofool.errors import EvofoolError

# name -> "module:Class"; imported lazily so one encoding's import cost is not everyone's.
ENCODINGS: dict[str, str] = {
    "direct": "evofool.encodings.direct:DirectEncoding",
    "cppn": "evofool.encodings.cppn:CPPNEncoding",
}


def make_encoding(name: str, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                  **params) -> Encoding:
    """Builds the encoding ``name`` for images of ``image_shape`` on ``device``.

    Raises:
        EvofoolError: for an unknown name or unknown parameters.
    """
    if name not in ENCODINGS:
        raise EvofoolError(f"unknown encoding {name!r}; choose one of: {', '.join(sorted(ENCODINGS))}")
    module_name, cls_name = ENCODINGS[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        return cls(image_shape, device=device, **params)
    except TypeError as exc:
        raise EvofoolError(f"bad parameters for encoding {name!r}: {exc}") from None


__all__ = ["Encoding", "ENCODINGS", "make_encoding"]
