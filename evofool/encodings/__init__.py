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

# Encoding names that run folders record but ``evofool run`` does not evolve: the command
# that writes them checks its own parameters (``evofool ascent``: AscentSettings).
RECORDED_ENCODINGS: tuple[str, ...] = ("ascent",)


def encoding_class(name: str) -> type[Encoding]:
    """The class of the encoding ``name``.

    Raises:
        EvofoolError: for an unknown name (the known ones are listed).
    """
    if name not in ENCODINGS:
        raise EvofoolError(f"unknown encoding {name!r}; choose one of: {', '.join(sorted(ENCODINGS))}")
    module_name, cls_name = ENCODINGS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def check_params(name: str, params: dict) -> dict:
    """The parameters of encoding ``name`` checked against its ``PARAMS`` (defaults filled in).

    Raises:
        EvofoolError: an unknown encoding; ``ConfigError``: an unknown or invalid parameter.
    """
    return encoding_class(name).check_params(params)


def describe_params() -> dict[str, list[str]]:
    """Encoding name -> one ``--help`` line per parameter (name=default, range, meaning)."""
    return {name: encoding_class(name).describe_params() for name in ENCODINGS}


def make_encoding(name: str, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                  **params) -> Encoding:
    """Builds the encoding ``name`` for images of ``image_shape`` on ``device``.

    Raises:
        EvofoolError: for an unknown name, or unknown or invalid parameters (``ConfigError``).
    """
    return encoding_class(name)(image_shape, device=device, **params)


__all__ = ["Encoding", "ENCODINGS", "RECORDED_ENCODINGS", "check_params", "describe_params",
           "encoding_class", "make_encoding"]
