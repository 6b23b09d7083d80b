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


def test_torch_threads_sets_and_restores():
    import torch

    from evofool.devices import torch_threads

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(KeyError), torch_threads(other):
        raise KeyError("restored on the way out")
    assert torch.get_num_threads() == before
