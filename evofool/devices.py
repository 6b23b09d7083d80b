"""Where models run: the one place that turns a ``--device`` value into a ``torch.device``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from evofool.errors import EvofoolError

AUTO = ("", "auto")  # besides None: "choose for me"
# The --device help of every command that takes one.
DEVICE_HELP = "cpu, cuda, cuda:N [default: cuda if available]."


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | None) -> torch.device:
    """The device a ``--device`` option (or a config's ``device``) names; ``None``/``auto``: ``default_device``.

    Raises:
        EvofoolError: a name torch does not know, or ``cuda`` where no GPU is visible.
    """
    if name is None or name in AUTO:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EvofoolError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvofoolError(f"device {name} asked for, but no CUDA GPU is available")
    return device


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads are ``n`` inside the block (``None``: left as they are).

    Switching costs about a microsecond (measured: 1,000 switches back and forth cost no
    more than the ops between them), so it can wrap each phase of every generation.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["DEVICE_HELP", "default_device", "resolve_device", "torch_threads"]
