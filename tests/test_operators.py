"""The vectorised operators against DEAP's own, on small genomes."""

import random

import numpy as np
import pytest
import torch
from deap import tools

from evofool.operators import (polynomial_bounded, polynomial_step, sbx_from_uniforms,
                               simulated_binary_bounded)


class ScriptedRandom:
    """Feeds DEAP's ``random.random()`` calls from a prepared list."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self):
        return self.values.pop(0)


def test_polynomial_matches_deap_given_same_draws(monkeypatch):
    rng = np.random.default_rng(1)
    for eta, low, up in [(15.0, 0.0, 1.0), (20.0, -10.0, 10.0)]:
        x = rng.uniform(low, up, 64)
        x[:3] = [low, up, (low + up) / 2]  # genes on the bounds too
        mask_u = rng.uniform(size=64)
        rand_u = rng.uniform(size=64)
        indpb = 0.4
        # DEAP draws mask, then (only for mutated genes) the step, gene by gene.
        seq = []
        for i in range(64):
            seq.append(mask_u[i])
            if mask_u[i] <= indpb:
                seq.append(rand_u[i])
        monkeypatch.setattr(random, "random", ScriptedRandom(seq))
        (expected,) = tools.mutPolynomialBounded(list(x), eta=eta, low=low, up=up, indpb=indpb)
        xt = torch.tensor(x, dtype=torch.float64)
        mutated = polynomial_step(xt, torch.tensor(rand_u), eta, low, up)
        ours = torch.where(torch.tensor(mask_u) <= indpb, mutated, xt)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)


def test_sbx_matches_deap_given_same_draws(monkeypatch):
    rng = np.random.default_rng(2)
    eta, low, up = 10.0, 0.0, 1.0
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    b[:5] = a[:5]  # equal genes are never crossed
    cross_u, rand_u, swap_u = rng.uniform(size=(3, 50))
    seq = []
    for i in range(50):
        seq.append(cross_u[i])
        if cross_u[i] <= 0.5 and abs(a[i] - b[i]) > 1e-14:
            seq += [rand_u[i], swap_u[i]]
    monkeypatch.setattr(random, "random", ScriptedRandom(seq))
    e1, e2 = tools.cxSimulatedBinaryBounded(list(a), list(b), eta=eta, low=low, up=up)
    o1, o2 = sbx_from_uniforms(torch.tensor(a), torch.tensor(b), torch.tensor(cross_u), torch.tensor(rand_u),
                               torch.tensor(swap_u), eta, low, up, 0.5)
    np.testing.assert_allclose(o1.numpy(), e1, atol=1e-12)
    np.testing.assert_allclose(o2.numpy(), e2, atol=1e-12)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(ca - cb)))


def test_polynomial_step_distribution_rate_and_bounds_like_deap():
    """Independent randomness: same distribution of step sizes, same rate, same clamping."""
    random.seed(0)
    rng = np.random.default_rng(0)
    genomes = rng.uniform(size=(400, 25))
    deap_out = np.array([tools.mutPolynomialBounded(list(g), eta=15.0, low=0.0, up=1.0, indpb=0.1)[0]
                         for g in genomes])
    gen = torch.Generator().manual_seed(0)
    ours = polynomial_bounded(torch.tensor(genomes), 15.0, 0.0, 1.0, 0.1, gen).numpy()
    deap_steps = (deap_out - genomes)[deap_out != genomes]
    our_steps = (ours - genomes)[ours != genomes]
    assert abs(len(our_steps) / genomes.size - 0.1) < 0.01
    assert abs(len(deap_steps) / genomes.size - len(our_steps) / genomes.size) < 0.015
    assert _ks(deap_steps, our_steps) < 0.08  # ~1,000 samples each: 0.08 is far above noise-free
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    # Genes at a bound only move inwards (clamping).
    edge = polynomial_bounded(torch.ones(10_000, dtype=torch.float64), 15.0, 0.0, 1.0, 1.0, gen)
    assert edge.max() <= 1.0 and (edge < 1.0).any()


def test_polynomial_rate_zero_and_one():
    x = torch.rand(1000, dtype=torch.float64)
    assert torch.equal(polynomial_bounded(x, 15.0, 0.0, 1.0, 0.0), x)
    assert (polynomial_bounded(x, 15.0, 0.0, 1.0, 1.0) != x).float().mean() > 0.99


def test_sbx_distribution_like_deap():
    random.seed(1)
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(2, 300, 20))
    d1 = np.array([tools.cxSimulatedBinaryBounded(list(x), list(y), eta=10.0, low=0.0, up=1.0)[0]
                   for x, y in zip(a, b)])
    gen = torch.Generator().manual_seed(1)
    o1, o2 = simulated_binary_bounded(torch.tensor(a), torch.tensor(b), 10.0, 0.0, 1.0, 0.5, gen)
    assert _ks((d1 - a).ravel(), (o1.numpy() - a).ravel()) < 0.06
    # Children of a crossed pair keep the parents' mean unless clamped.
    assert torch.all((o1 >= 0) & (o1 <= 1) & (o2 >= 0) & (o2 <= 1))


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 16, 16)])
def test_polynomial_is_seeded_and_shape_preserving(shape):
    x = torch.rand(shape)
    a = polynomial_bounded(x, 15.0, 0.0, 1.0, 0.1, torch.Generator().manual_seed(7))
    b = polynomial_bounded(x, 15.0, 0.0, 1.0, 0.1, torch.Generator().manual_seed(7))
    assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("eta", [15.0, 20.0])  # squarings (16 = 2^4) and pow
def test_pixel_mutation_equals_the_float_path_given_the_same_seed(eta):
    """The uint8 fast path (NumPy on the CPU) = mutate x / 255 as torch floats, then round
    back to 8 bits."""
    from evofool.operators import polynomial_bounded_pixels

    pixels = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fast = polynomial_bounded_pixels(pixels, eta, 0.1, torch.Generator().manual_seed(2))
    slow = polynomial_bounded(pixels.float() / 255.0, eta, 0.0, 1.0, 0.1, torch.Generator().manual_seed(2))
    slow = slow.mul(255.0).round().to(torch.uint8)
    # Same draws, same formula; float32 rounding (torch's CPU pow and sqrt are not exactly
    # rounded) may tip a pixel that sits on a half grey level, about 6 in 10^6.
    off = (fast.int() - slow.int()).abs()
    assert fast.dtype == torch.uint8 and off.max() <= 1 and off.sum() <= 2
    changed = (fast != pixels).float().mean().item()
    assert 0.05 < changed < 0.11  # ~10 % chosen; a small step can round back to the same pixel


def _rounded_reference(genes: np.ndarray, rand: np.ndarray, k: int) -> np.ndarray:
    """The squarings formula with every step done in float64 and rounded to float32: the
    correctly rounded float32 result of each step (53 >= 2·24 + 2 bits, so rounding twice
    is harmless for +, -, ×, / and sqrt)."""
    f32 = np.float32

    def r(x):
        return np.asarray(x, dtype=np.float64).astype(f32)

    centred = r(0.5 - rand.astype(np.float64))
    s = np.sign(centred)
    two_a = r(np.abs(centred) * 2.0)
    dist = r(r(0.5 - genes.astype(np.float64)) * s)
    dist = r(dist + 0.5)
    for _ in range(k):
        dist = r(dist.astype(np.float64) ** 2)
    val = r(r(r(dist - 1.0) * two_a.astype(np.float64)) + 1.0)
    q = np.maximum(val, f32(0))
    for _ in range(k):
        q = r(np.sqrt(q.astype(np.float64)))
    q = r(r(q - 1.0) * s)
    return np.clip(r(q + genes.astype(np.float64)), f32(0), f32(1))


def test_polynomial_step_in_numpy_is_correctly_rounded_so_no_cpu_changes_it():
    """eta + 1 = 2^k: the CPU pixel path (NumPy) takes k squarings and k square roots, each
    exactly rounded, so its bits are IEEE's and the same on any CPU (torch's float32
    sqrt on the CPU is not exactly rounded: an ulp off for ~20 % of inputs here)."""
    from evofool.operators import _squarings

    assert [_squarings(e) for e in (2.0, 16.0, 64.0, 17.0, 41.0, 128.0)] == [1, 4, 6, None, None, None]
    rng = np.random.default_rng(5)
    genes = rng.uniform(size=50_000).astype(np.float32)
    genes[:2] = [0.0, 1.0]
    rand = rng.uniform(size=50_000).astype(np.float32)
    rand[2] = 0.5
    ours = polynomial_step(genes.copy(), rand, 15.0, 0.0, 1.0)
    assert ours.dtype == np.float32 and np.array_equal(ours, _rounded_reference(genes, rand, 4))
    # torch runs the same formula, within float32 rounding of it.
    theirs = polynomial_step(torch.from_numpy(genes.copy()), torch.from_numpy(rand), 15.0, 0.0, 1.0).numpy()
    assert np.abs(ours - theirs).max() <= 4 * 2.0 ** -24
    # And the float64 result within a fortieth of a grey level (the 16th root amplifies
    # float32's rounding of 1 + 2a·(d^16 - 1), as it did with pow).
    exact = polynomial_step(genes.astype(np.float64), rand.astype(np.float64), 15.0, 0.0, 1.0)
    assert np.abs(ours - exact).max() <= 1e-4


def test_bernoulli_positions_rate_and_gaps_are_geometric():
    from evofool.operators import bernoulli_positions

    n, p = 200_000, 0.1
    pos = bernoulli_positions(n, p, torch.Generator().manual_seed(3))
    assert torch.all(pos[1:] > pos[:-1]) and pos.min() >= 0 and pos.max() < n
    assert abs(len(pos) / n - p) < 0.005
    gaps = torch.diff(pos).double()
    assert abs(gaps.mean().item() - 1 / p) < 0.1          # geometric mean 1/p
    assert abs(gaps.var().item() - (1 - p) / p**2) < 3.0  # and variance (1-p)/p²
    assert (gaps == 1).double().mean().item() == pytest.approx(p, abs=0.005)


# --- squares (the direct encoding's mutation=squares) ---------------------------------------
def test_paint_squares_paints_exactly_each_images_square_and_leaves_the_input():
    from evofool.operators import paint_squares

    pixels = torch.arange(2 * 3 * 7 * 9, dtype=torch.int64).remainder(200).to(torch.uint8).view(2, 3, 7, 9)
    before = pixels.clone()
    colour = np.array([[0, 255, 0], [255, 255, 255]])
    out = paint_squares(pixels, np.array([1, 4]), np.array([2, 6]), np.array([3, 3]), colour)
    assert torch.equal(pixels, before) and out.dtype == torch.uint8
    expected = before.clone()
    expected[0, :, 1:4, 2:5] = torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1)
    expected[1, :, 4:7, 6:9] = 255
    assert torch.equal(out, expected)


def test_paint_lattices_paints_exactly_each_images_repeated_rectangle_and_leaves_the_input():
    from evofool.operators import paint_lattices

    pixels = torch.arange(2 * 3 * 7 * 9, dtype=torch.int64).remainder(200).to(torch.uint8).view(2, 3, 7, 9)
    before = pixels.clone()
    colour = np.array([[0, 255, 0], [255, 255, 255]])
    # Image 0: a 1×2 rectangle every 3 rows and 4 columns from (1, 2); image 1: full-height
    # stripes (side = period on the rows), one column wide every 5 columns from column 3.
    out = paint_lattices(pixels, np.array([1, 0]), np.array([2, 3]), np.array([1, 2]), np.array([2, 1]),
                         np.array([3, 2]), np.array([4, 5]), colour)
    assert torch.equal(pixels, before) and out.dtype == torch.uint8
    expected = before.clone()
    for y in (1, 4):
        for x in (2, 3, 6, 7):
            expected[0, :, y, x] = torch.tensor([0, 255, 0], dtype=torch.uint8)
    expected[1, :, :, [3, 8]] = 255
    assert torch.equal(out, expected)


def test_random_lattices_are_seeded_periodic_in_range_and_of_extreme_colours():
    from evofool.operators import random_lattices

    grey = torch.full((100, 3, 40, 60), 128, dtype=torch.uint8)
    a = random_lattices(grey, 0.1, 0.5, np.random.default_rng(3))
    assert torch.equal(a, random_lattices(grey, 0.1, 0.5, np.random.default_rng(3)))
    assert not torch.equal(a, random_lattices(grey, 0.1, 0.5, np.random.default_rng(4)))
    assert set(torch.unique(a[(a != 128)]).tolist()) <= {0, 255}
    changed = (a != grey).any(1)
    assert changed.any(2).any(1).all()  # every child was painted
    for axis, size in ((2, 40), (1, 60)):  # rows (any column changed), columns
        lines = changed.any(axis).numpy()
        for line in lines:
            # The painted lines repeat with a period of 4-20 pixels (10-50 % of the 40-pixel
            # side) that fits inside the image: some p in range maps the set onto itself.
            periods = [p for p in range(4, 21) if (line[:-p] <= line[p:]).all() and (line[p:] <= line[:-p]).all()]
            assert periods or line.all(), line
    rows, cols = changed.any(2).sum(1), changed.any(1).sum(1)
    assert torch.equal(changed.sum((1, 2)), rows * cols)  # one lattice each: every painted row meets every column
    assert (rows < 40).float().mean() > 0.5 and (cols < 60).float().mean() > 0.5


def test_add_patterns_adds_signed_amplitudes_rounds_half_to_even_and_clips():
    from evofool.operators import add_patterns

    pixels = torch.tensor([[[[100, 250, 3, 10]]] * 2], dtype=torch.uint8).view(1, 2, 1, 4)
    pattern = torch.tensor([[[0.5, 0.5, -0.5, 0.25]]])  # 1×1×4
    out = add_patterns(pixels, pattern, np.array([[10.0, -10.0]]))
    # Channel 0: 100 + 5, 250 + 5, 3 - 5 -> 0 (clipped), 10 + 2.5 -> 12 (half to even);
    # channel 1 gets the negative pattern.
    assert out.tolist() == [[[[105, 255, 0, 12]], [[95, 245, 8, 8]]]] and out.dtype == torch.uint8
    assert pixels[0, 0, 0, 0] == 100  # the input is left as it was


@pytest.mark.parametrize("name", ["random_waves", "random_rings"])
def test_waves_and_rings_are_the_same_made_a_block_at_a_time_as_a_whole_batch_at_once(name, monkeypatch):
    """add_patterns works a block of images at a time on the CPU; every step is per pixel,
    so the block (one image, three, or the whole batch) changes no bit, and the torch formula
    (the GPU's) gives the same images."""
    import evofool.operators as ops

    pixels = torch.randint(0, 256, (7, 3, 17, 23), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    made = {}
    for images in (1, 3, 7):
        monkeypatch.setattr(ops, "PATTERN_BLOCK_FLOATS", images * 3 * 17 * 23)
        made[images] = getattr(ops, name)(pixels, 0.05, 2.0, np.random.default_rng(8), (16.0, 128.0))
    assert torch.equal(made[1], made[3]) and torch.equal(made[1], made[7])
    assert (made[7] != pixels).float().mean() > 0.5  # a pattern over every image

    patterns = torch.rand(7, 17, 23, generator=torch.Generator().manual_seed(1)) * 2 - 1
    amplitude = np.random.default_rng(2).uniform(-128, 128, (7, 3))
    scale = torch.as_tensor(amplitude, dtype=torch.float32).view(7, 3, 1, 1)
    formula = (pixels.to(torch.float32) + patterns.unsqueeze(1) * scale).round_().clamp_(0, 255).to(torch.uint8)
    assert torch.equal(ops.add_patterns(pixels, patterns, amplitude), formula)
    assert torch.equal(ops.add_patterns(pixels, lambda a, b: patterns[a:b], amplitude), formula)


@pytest.mark.parametrize("name", ["random_waves", "random_rings"])
def test_random_waves_and_rings_are_seeded_bounded_one_pattern_signed_per_channel(name):
    import evofool.operators as ops

    make = getattr(ops, name)
    grey = torch.full((50, 3, 40, 60), 128, dtype=torch.uint8)
    a = make(grey, 0.1, 0.5, np.random.default_rng(3), (20.0, 60.0))
    assert torch.equal(a, make(grey, 0.1, 0.5, np.random.default_rng(3), (20.0, 60.0)))
    assert not torch.equal(a, make(grey, 0.1, 0.5, np.random.default_rng(4), (20.0, 60.0)))
    delta = a.to(torch.float32) - 128
    peak = delta.abs().amax((1, 2, 3))
    assert (peak <= 60).all() and (peak >= 15).all()  # a crest (or near one) of 20-60 grey levels in each
    # Every channel carries the same pattern, added or subtracted (up to rounding).
    assert ((delta[:, 1].abs() - delta[:, 0].abs()).abs() <= 1).all()
    assert ((delta[:, 2].abs() - delta[:, 0].abs()).abs() <= 1).all()
    # A wave or ring pattern is smooth: neighbouring pixels differ by at most 2π·60/4 grey levels
    # (the steepest slope at the shortest period, 4 pixels) plus rounding.
    assert delta.diff(dim=3).abs().max() <= 2 * np.pi * 60 / 4 + 1


def test_random_choice_of_gives_each_image_exactly_one_operator_in_list_order():
    from evofool.operators import random_choice_of

    pixels = torch.zeros((300, 1, 2, 2), dtype=torch.uint8)
    seen = []

    def mark(value):
        def operator(batch):
            seen.append(value)
            return torch.full_like(batch, value)
        return operator

    out = random_choice_of(pixels, [mark(1), mark(2), mark(3)], np.random.default_rng(0))
    assert seen == [1, 2, 3] and torch.equal(pixels, torch.zeros_like(pixels))
    values = out.view(300, -1)
    assert (values == values[:, :1]).all() and set(values[:, 0].tolist()) == {1, 2, 3}
    assert all(80 <= int((values[:, 0] == v).sum()) <= 120 for v in (1, 2, 3))
    again = random_choice_of(pixels, [mark(1), mark(2), mark(3)], np.random.default_rng(0))
    assert torch.equal(out, again)


def test_random_squares_are_seeded_in_range_and_of_extreme_colours():
    from evofool.operators import random_squares

    grey = torch.full((200, 3, 40, 60), 128, dtype=torch.uint8)
    a = random_squares(grey, 1, 0.1, 0.5, np.random.default_rng(3))
    assert torch.equal(a, random_squares(grey, 1, 0.1, 0.5, np.random.default_rng(3)))
    assert not torch.equal(a, random_squares(grey, 1, 0.1, 0.5, np.random.default_rng(4)))
    changed = (a != grey).any(1)  # every painted pixel leaves grey: 0 or 255 in each channel
    assert set(torch.unique(a[(a != 128)]).tolist()) <= {0, 255}
    rows, cols = changed.any(2).sum(1), changed.any(1).sum(1)
    assert torch.equal(rows, cols) and torch.equal(changed.sum((1, 2)), rows * cols)  # one square each
    assert rows.min() >= 4 and rows.max() <= 20 and len(torch.unique(rows)) > 8  # 10-50 % of the 40-pixel side
    several = random_squares(grey, 3, 0.1, 0.5, np.random.default_rng(3))
    assert (several != grey).any(1).sum() > changed.sum()
