"""``resolve_device``: what ``--device`` values mean."""

from __future__ import annotations

import pytest
import torch

from evofool.devices import default_device, resolve_device
from evofool.errors import EvofoolError


@pytest.mark.parametrize("name", [None, "", "auto"])
def test_no_choice_is_the_default_device(name):
    assert resolve_device(name) == default_device()


def test_named_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(EvofoolError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(EvofoolError, match="no CUDA GPU is available"):
        resolve_device("cuda:0")
