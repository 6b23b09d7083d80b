"""Image files as uint8 ``C×H×W`` tensors: the one conversion to PIL, the one PNG writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evofool.errors import EvofoolError
from evofool.imageio import load_image, save_png, to_pil


@pytest.mark.parametrize("shape, mode", [((1, 5, 7), "L"), ((3, 5, 7), "RGB")])
def test_save_png_round_trips_exactly(tmp_path, shape, mode):
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert to_pil(image).mode == mode and to_pil(image.numpy()).size == (7, 5)
    path = save_png(image, tmp_path / "new" / "x.png")  # the parent is made
    assert torch.equal(load_image(path, shape), image)


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4), np.uint8), np.zeros((1, 4, 4), np.float32),
                                 np.zeros((4, 4), np.uint8)])
def test_to_pil_refuses_what_is_not_an_image(bad):
    with pytest.raises(ValueError, match="uint8 1×H×W or 3×H×W"):
        to_pil(bad)


def test_save_png_never_writes_through_a_link(tmp_path):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"keep")
    (tmp_path / "x.png").symlink_to(target)
    with pytest.raises(EvofoolError, match="link"):
        save_png(torch.zeros(1, 2, 2, dtype=torch.uint8), tmp_path / "x.png")
    assert target.read_bytes() == b"keep"
