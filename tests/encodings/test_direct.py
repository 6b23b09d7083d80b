"""The direct (pixel) encoding."""

import numpy as np
import pytest
import torch

from evofool.encodings import make_encoding
from evofool.encodings.direct import DirectEncoding
from evofool.errors import EvofoolError


def test_random_vary_render_are_uint8_images_of_the_model_shape():
    enc = DirectEncoding((1, 28, 28), mutation="polynomial", init="noise")  # the paper's
    rng = np.random.default_rng(0)
    g = enc.random(8, rng)
    assert g.shape == (8, 1, 28, 28) and g.dtype == torch.uint8
    assert len(torch.unique(g)) > 200  # uniform over 0..255
    child = enc.vary(g, rng, generation=1)
    assert child.dtype == torch.uint8 and child.shape == g.shape
    changed = (child != g).float().mean().item()
    assert 0.06 < changed < 0.11  # ~10 % mutated; a few steps round back to the same level
    assert torch.equal(enc.render(child), child)


def test_rate_halves_on_schedule():
    enc = DirectEncoding((1, 8, 8), mutation_rate=0.1, halve_every=10)
    assert enc.rate_at(1) == 0.1 and enc.rate_at(10) == 0.05 and enc.rate_at(25) == 0.025
    assert DirectEncoding((1, 8, 8), halve_every=0).rate_at(10_000) == 0.1


def test_same_rng_same_offspring_and_crossover_changes_genes():
    enc = DirectEncoding((3, 8, 8), crossover_rate=1.0, mutation="polynomial", init="noise")
    parents = enc.random(6, np.random.default_rng(1))
    a = enc.vary(parents, np.random.default_rng(5), 1)
    b = enc.vary(parents, np.random.default_rng(5), 1)
    assert torch.equal(a, b)
    no_cx = DirectEncoding((3, 8, 8), crossover_rate=0.0, mutation="polynomial")
    no_cx = no_cx.vary(parents, np.random.default_rng(5), 1)
    assert (a != parents).float().mean() > (no_cx != parents).float().mean()


def test_pack_unpack_round_trip():
    enc = DirectEncoding((1, 5, 5))
    store = enc.empty_store(4)
    g = enc.random(2, np.random.default_rng(0))
    store = enc.put(store, np.array([1, 3]), g, np.array([0, 1]))
    packed = enc.pack(store, np.array([1, 3]))
    back = enc.unpack(packed, np.array([1, 3]), 4)
    assert torch.equal(back, store)
    with pytest.raises(ValueError):
        enc.unpack({"pixels": packed["pixels"][:, :, :3]}, np.array([1, 3]), 4)


def test_unknown_encoding_and_bad_params_are_user_errors():
    with pytest.raises(EvofoolError, match="unknown encoding"):
        make_encoding("pixels", (1, 28, 28))
    with pytest.raises(EvofoolError, match="unknown parameter 'etaa' for encoding direct; valid: eta=15.0, "):
        make_encoding("direct", (1, 28, 28), etaa=3)
    with pytest.raises(EvofoolError, match="eta must be a finite number > 0"):
        make_encoding("direct", (1, 28, 28), eta=0)


def test_squares_mutation_paints_one_square_per_child_and_flat_init_is_one_colour_each():
    enc = DirectEncoding((3, 32, 32), mutation="squares", init="flat", square_min=0.25, square_max=0.5)
    assert enc.config()["mutation"] == "squares" and enc.config()["init"] == "flat"
    rng = np.random.default_rng(0)
    parents = enc.random(50, rng)
    flat = parents.reshape(50, 3, -1)
    assert torch.equal(flat, flat[:, :, :1].expand_as(flat)) and len(torch.unique(flat[:, :, 0], dim=0)) > 40
    children = enc.vary(parents, rng, generation=1)
    changed = (children != parents).any(1)
    rows, cols = changed.any(2).sum(1), changed.any(1).sum(1)
    # A square of 8-16 pixels, unless its corner colour happened to equal the flat one in places.
    assert torch.equal(changed.sum((1, 2)), rows * cols) and ((rows == 0) | (rows == cols)).all()
    assert (rows <= 16).all() and (rows >= 8).float().mean() > 0.9


def test_lattice_mutation_paints_one_repeated_rectangle_per_child():
    enc = DirectEncoding((3, 32, 32), mutation="lattice", init="flat", period_min=0.25, period_max=0.5)
    assert enc.config()["mutation"] == "lattice" and enc.config()["period_max"] == 0.5
    rng = np.random.default_rng(0)
    parents = enc.random(50, rng)
    children = enc.vary(parents, rng, generation=1)
    assert torch.equal(enc.vary(parents, np.random.default_rng(7), 1), enc.vary(parents, np.random.default_rng(7), 1))
    changed = (children != parents).any(1)
    rows, cols = changed.any(2).sum(1), changed.any(1).sum(1)
    assert torch.equal(changed.sum((1, 2)), rows * cols)  # a product of painted rows and columns
    # Periods of 8-16 pixels on a 32-pixel side: each painted rectangle comes round at least
    # once on an axis it does not fill (unless its colour met the flat one's).
    repeats = [len(np.flatnonzero(np.diff(np.flatnonzero(line)) > 1)) >= 1 or line.all() or not line.any()
               for line in changed.any(2).numpy()]
    assert all(repeats)


def test_patterns_mutation_gives_each_child_a_lattice_a_wave_or_rings():
    enc = DirectEncoding((3, 32, 32), mutation="patterns", init="flat")
    rng = np.random.default_rng(0)
    parents = enc.random(60, rng)
    children = enc.vary(parents, rng, generation=1)
    assert torch.equal(enc.vary(parents, np.random.default_rng(5), 1), enc.vary(parents, np.random.default_rng(5), 1))
    delta = children.to(torch.int16) - parents.to(torch.int16)
    changed = (delta != 0).any(1)
    # A painted lattice sets whole channels to 0 or 255; a wave or ring shifts every channel
    # by one pattern, signed: both kinds appear among 60 children.
    painted = ((children == 0) | (children == 255) | (delta == 0)).all(1).all(2).all(1)
    assert changed.any(2).any(1).float().mean() > 0.9
    assert 5 < int(painted.sum()) < 55


def test_pixels_as_weights_round_trip_for_gradient_refinement():
    enc = DirectEncoding((3, 8, 8))
    genomes = enc.random(4, np.random.default_rng(0))
    weights = enc.weights_of(genomes)
    assert weights.shape == (4 * 3 * 8 * 8,) and weights.min() >= -enc.weight_bound and weights.max() <= 0.5
    assert torch.equal(enc.with_weights(genomes, weights), genomes)
    images = enc.render_differentiable(genomes, torch.as_tensor(weights))
    assert torch.allclose(images * 255, genomes.float(), atol=1e-4)
