"""``resolve_device``: what ``--device`` values mean."""

from __future__ import annotations

import numpy as np
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


@pytest.mark.parametrize("name", ["meta", "mps", "xpu"])
def test_device_types_torch_knows_but_evofool_does_not_run_on_are_refused(name):
    """meta, mps... are torch devices, but nothing of evofool runs there: one line, not a
    traceback from deep inside a run."""
    with pytest.raises(EvofoolError, match=f"device '{name}' is not supported; choose cpu, cuda or cuda:N"):
        resolve_device(name)


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


@pytest.mark.parametrize("dtype, row", [(torch.uint8, (3, 32, 32)), (torch.uint8, (1, 28, 28)),
                                        (torch.float64, (5,))])
def test_copy_rows_is_index_copy(dtype, row):
    """The NumPy row copy on the CPU writes exactly what ``index_copy_`` writes, in place."""
    from evofool.devices import copy_rows_

    g = torch.Generator().manual_seed(0)
    dest = (torch.rand(20, *row, generator=g) * 255).to(dtype)
    source = (torch.rand(6, *row, generator=g) * 255).to(dtype)
    rows = torch.tensor([19, 0, 7, 3, 12, 8])
    expected = dest.clone().index_copy_(0, rows, source)
    same = dest.data_ptr()
    assert copy_rows_(dest, rows.numpy(), source) is dest and dest.data_ptr() == same
    assert torch.equal(dest, expected)
    assert torch.equal(copy_rows_(dest, rows, source * 0), expected.index_fill_(0, rows, 0))
    view = torch.zeros(20, *row, dtype=dtype).transpose(0, -1).transpose(0, -1)[::2]  # not contiguous
    assert torch.equal(copy_rows_(view, [1, 2], source[:2])[1:3], source[:2])


@pytest.mark.parametrize("dtype, row", [(torch.uint8, (3, 32, 32)), (torch.uint8, (1, 28, 28)),
                                        (torch.float64, (5,))])
def test_take_rows_is_index_select(dtype, row):
    """The NumPy row gather on the CPU gives exactly ``index_select``'s rows, repeats and an
    empty selection included, from NumPy or torch indices, and never a view of the source."""
    from evofool.devices import take_rows

    g = torch.Generator().manual_seed(1)
    source = (torch.rand(20, *row, generator=g) * 255).to(dtype)
    for rows in ([19, 0, 7, 7, 3], [], list(range(20))):
        expected = source.index_select(0, torch.tensor(rows, dtype=torch.long))
        for index in (np.asarray(rows, dtype=np.int64), torch.tensor(rows, dtype=torch.long)):
            got = take_rows(source, index)
            assert got.dtype == dtype and torch.equal(got, expected)
    got = take_rows(source, [2, 4])
    got.zero_()
    assert source[2].any()  # a copy
    strided = source.transpose(0, -1).transpose(0, -1)[::2]  # not contiguous: index_select
    assert torch.equal(take_rows(strided, [1, 3]), source[[2, 6]])
