"""The batched CPPN renderer against the plain one-genome reference."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from evofool.encodings import cppn_render
from evofool.encodings.cppn import CPPNEncoding, render_one_reference
from evofool.encodings.cppn_genome import Genome, compute_layers
from evofool.encodings.cppn_render import hsv_to_rgb, input_planes_np


def mutated_population(enc: CPPNEncoding, n: int, seed: int, max_rounds: int = 30) -> list[Genome]:
    """``n`` random genomes, genome i varied ``k_i`` ~ U{0..max_rounds} times: mixed topologies."""
    rng = np.random.default_rng(seed)
    pop = enc.random(n, rng)
    rounds = rng.integers(0, max_rounds + 1, size=n)
    for r in range(max_rounds):
        idx = np.flatnonzero(rounds > r)
        for i, child in zip(idx, enc.vary(enc.take(pop, idx), rng, r)):
            pop[i] = child
    return pop


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["gray28", "colour32"])
def test_batched_equals_reference_on_200_mutated_genomes(shape):
    enc = CPPNEncoding(shape, render_dtype="float64")
    pop = mutated_population(enc, 200, seed=sum(shape))
    assert len({g.n_nodes for g in pop}) > 5 and max(g.n_hidden for g in pop) >= 5  # topologies differ
    ref = np.stack([render_one_reference(g, shape) for g in pop])
    got = enc.render_float(pop)
    assert got.shape == (200, *shape)
    assert np.abs(got.cpu().numpy() - ref).max() <= 1e-5
    images = enc.render(pop).cpu().numpy().astype(np.int64)
    diff = np.abs(images - np.round(ref * 255.0).astype(np.int64))
    assert diff.max() <= 1  # only at rounding boundaries
    assert (diff > 0).mean() < 1e-3


def test_float32_rendering_is_close():
    enc = CPPNEncoding((1, 28, 28), render_dtype="float32")
    pop = mutated_population(enc, 100, seed=3)
    ref = np.stack([render_one_reference(g, enc.image_shape) for g in pop])
    got = enc.render_float(pop)
    assert got.dtype == torch.float32
    assert np.abs(got.numpy() - ref).max() <= 5e-3


def test_a_genome_renders_the_same_alone_and_in_any_batch():
    enc = CPPNEncoding((3, 16, 16))
    pop = mutated_population(enc, 40, seed=7)
    together = enc.render(pop)
    alone = torch.cat([enc.render([g]) for g in pop])
    shuffled = enc.render(pop[::-1]).flip(0)
    assert torch.equal(together, alone) and torch.equal(together, shuffled)


def test_chunks_and_pixel_tiles_do_not_change_images(monkeypatch):
    enc = CPPNEncoding((3, 10, 20))
    pop = mutated_population(enc, 12, seed=11)
    one, one_float = enc.render(pop), enc.render_float(pop)
    monkeypatch.setattr(cppn_render, "CPU_CHUNK_ROWS", 20)  # one or two genomes per chunk
    monkeypatch.setattr(cppn_render, "TILE_ELEMENTS", 1)  # 64-pixel tiles (the last one partial)
    assert torch.equal(one, enc.render(pop))
    assert torch.equal(one_float, enc.render_float(pop))


def test_render_is_uint8_on_device_and_empty_batch_works():
    enc = CPPNEncoding((3, 8, 8))
    img = enc.render(enc.random(5, np.random.default_rng(0)))
    assert img.dtype == torch.uint8 and img.shape == (5, 3, 8, 8) and img.device == enc.device
    assert enc.render([]).shape == (0, 3, 8, 8)


def test_inputs_and_squashing_on_a_hand_made_genome():
    # out = linear(1.0 * x): pixel = min(|x|, 1) = |x|, with x = 2*col/(W-1) - 1.
    w = 9
    g = Genome(gid=0, parent=-1, n_out=1, node_id=np.arange(5), node_act=[-1, -1, -1, -1, 3],
               node_layer=compute_layers(5, np.array([0]), np.array([4])), link_id=[0],
               link_src=[0], link_dst=[4], link_weight=[1.0])
    img = CPPNEncoding((1, 3, w)).render([g])[0, 0].numpy()
    x = 2.0 * np.arange(w) / (w - 1) - 1.0
    assert np.array_equal(img, np.tile(np.round(255 * np.abs(x)).astype(np.uint8), (3, 1)))
    planes = input_planes_np(3, w)
    assert np.allclose(planes[2], np.hypot(planes[0], planes[1])) and np.all(planes[3] == 1)
    assert planes[1][0, 0] == -1 and planes[1][-1, 0] == 1


def test_nodes_without_a_path_to_an_output_are_not_computed_and_change_nothing():
    """A hidden chain fed by x that reaches no output (as remove_link leaves behind) gets no
    row of the layout and no link; the image is the same bits as without it, and its link
    weights get no gradient."""
    def genome(links):  # nodes: 4 inputs, output 4, hidden 5 -> 6 (dead) and 7 (into the output)
        src, dst, w = (np.array(v) for v in zip(*links))
        return Genome(gid=0, parent=-1, n_out=1, node_id=np.arange(8), node_act=[-1, -1, -1, -1, 0, 1, 2, 0],
                      node_layer=compute_layers(8, src, dst), link_id=np.arange(len(src)), link_src=src,
                      link_dst=dst, link_weight=w.astype(np.float32))

    live = [(0, 7, 1.5), (2, 7, -0.7), (7, 4, 2.0), (1, 4, 0.3)]
    with_dead = genome(live[:2] + [(0, 5, 0.9), (5, 6, 1.1), (3, 6, 0.4)] + live[2:])
    layout = cppn_render.build_layout([with_dead], 1)
    assert layout.n_rows == 4 + 2  # the inputs, node 7 and the output
    assert sorted(np.r_[layout.first_link[layout.first_link >= 0], layout.extra_link]) == [0, 1, 5, 6]
    enc = CPPNEncoding((1, 12, 10), render_dtype="float64")
    assert torch.equal(enc.render([with_dead]), enc.render([genome(live)]))
    weights = torch.from_numpy(with_dead.link_weight.astype(np.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(enc.render_differentiable([with_dead], weights).sum(), weights)
    assert np.array_equal(grad[2:5].numpy(), np.zeros(3)) and (grad[[0, 1, 5, 6]] != 0).all()


def test_hsv_to_rgb_matches_colorsys():
    hsv = torch.rand(1, 3, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hsv[0, 0, :5] = torch.tensor([0.0, 1.0, 1 / 6, 0.5, 5 / 6], dtype=torch.float64)
    got = hsv_to_rgb(hsv)[0].T.numpy()
    want = np.array([colorsys.hsv_to_rgb(*p) for p in hsv[0].T.numpy()])
    assert np.abs(got - want).max() < 1e-12


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["gray28", "colour32"])
def test_differentiable_render_is_the_batched_one_and_its_gradient_is_right(shape):
    """``--refine grad`` climbs through this renderer: the same images as ``render_batch``
    (same layout and arithmetic) and the gradient of finite differences."""
    enc = CPPNEncoding(shape, render_dtype="float64")
    pop = mutated_population(enc, 40, seed=7)
    weights = torch.from_numpy(enc.weights_of(pop).astype(np.float64)).requires_grad_(True)
    images = enc.render_differentiable(pop, weights)
    assert torch.equal(images.detach(), cppn_render.render_batch(pop, shape, "cpu", torch.float64, quantise=False))
    # Other weights in their place render as the genomes that carry them.
    moved = enc.with_weights(pop, enc.weights_of(pop) * 0.5)
    assert torch.allclose(enc.render_differentiable(pop, weights.detach() * 0.5), enc.render_float(moved))
    probe = torch.from_numpy(np.random.default_rng(1).standard_normal(images.shape))
    (grad,) = torch.autograd.grad((images * probe).sum(), weights)
    assert torch.isfinite(grad).all() and (grad != 0).any()
    for i in np.random.default_rng(2).choice(len(weights), 5, replace=False):
        step = torch.zeros_like(weights)
        step[i] = 1e-6
        with torch.no_grad():
            up = (enc.render_differentiable(pop, weights + step) * probe).sum()
            down = (enc.render_differentiable(pop, weights - step) * probe).sum()
        assert abs(float((up - down) / 2e-6) - float(grad[i])) <= 1e-4 * max(1.0, abs(float(grad[i])))
