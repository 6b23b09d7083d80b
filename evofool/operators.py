"""Vectorised variation operators, equivalent to DEAP's but over whole batches.

DEAP's ``mutPolynomialBounded`` loops over genes in Python (55 ms for a
196,608-gene genome); these apply the same per-gene formulas to a tensor of any
shape in a handful of tensor ops, drawing randomness from an explicit generator.
The formulas are split from the random draws (``*_from_uniforms``) so tests can
feed DEAP and evofool the same random numbers and demand equal results.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from evofool.devices import copy_rows_, take_rows


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


# Polynomial mutation raises to eta + 1 and to 1 / (eta + 1). Where eta + 1 = 2^k (the
# direct encoding's eta 15: 16 = 2^4) that is k squarings and k square roots, cheaper
# than one pow each: measured (AMD EPYC Zen 1, 1 thread, 15.7k genes of a LeNet pop-200
# batch) torch's pow_ took 0.18 ms a call, four sqrt_ 0.06 ms. In NumPy (the CPU pixel
# path) every step is then exactly rounded by IEEE 754, so its bits do not depend on the
# CPU's vector units; torch's CPU pow and float32 sqrt are not exactly rounded (sqrt was
# an ulp off for ~20 % of inputs on this AVX2 machine). Against pow the result moves by
# at most a float32 ulp, which changes about 6 in 10^6 re-quantised pixels.
MAX_SQUARINGS = 6


def _squarings(exponent: float) -> int | None:
    """``k`` where ``exponent == 2**k`` (1 <= k <= MAX_SQUARINGS), else None."""
    for k in range(1, MAX_SQUARINGS + 1):
        if exponent == 2.0 ** k:
            return k
    return None


def polynomial_step(genes, rand, eta: float, low: float, up: float):
    """DEAP's polynomial bounded mutation of ``genes`` given one uniform draw per gene.

    ``genes`` and ``rand`` are both torch tensors or both NumPy arrays (the CPU pixel
    path: NumPy's per-call overhead is a fraction of torch's on 16k-gene batches). Both
    run the same operations in the same order; they agree to float32 rounding (torch's
    CPU sqrt and pow are not exactly rounded, NumPy's sqrt is).
    """
    xp = np if isinstance(genes, np.ndarray) else torch
    span = up - low
    k = _squarings(eta + 1.0)
    # DEAP's two branches (rand < 0.5: step down, else up) are one formula after folding:
    # its 1 - delta_1 is the distance to the upper bound (and 1 - delta_2 to the lower),
    # and with r = min(rand, 1 - rand) both read val = 2r + (1 - 2r)·dist^(eta+1). Equal
    # to DEAP's arithmetic up to rounding (~1e-16 in float64).
    # Branch-free (torch.where costs ~5x a multiply on the CPU): s = +1 where DEAP steps
    # down (rand < 0.5), -1 where it steps up, 0 at rand = 0.5 (where both give 0). With
    # a = |rand - 0.5| = 1/2 - r: val = 2r + (1 - 2r)·dist^(eta+1) = 1 + 2a·(dist^(eta+1) - 1).
    centred = 0.5 - rand
    s = xp.sign(centred)
    two_a = abs(centred)
    two_a *= 2.0
    dist = 0.5 * (low + up) - genes                            # distance to the bound ...
    dist *= s
    if span != 1.0:
        dist /= span
    dist += 0.5                                                # ... in units of the span
    if k is None:
        dist **= eta + 1.0
    else:
        for _ in range(k):
            dist *= dist
    val = dist
    val -= 1.0
    val *= two_a
    val += 1.0
    delta_q = xp.clip(val, 0.0, None, out=val)
    if k is None:
        delta_q **= 1.0 / (eta + 1.0)
    else:
        for _ in range(k):
            xp.sqrt(delta_q, out=delta_q)
    delta_q -= 1.0
    delta_q *= s
    if span != 1.0:
        delta_q *= span
    delta_q += genes
    return xp.clip(delta_q, low, up, out=delta_q)


def bernoulli_positions(n: int, p: float, generator: torch.Generator | None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Sorted positions in ``range(n)`` each chosen independently with probability ``p``.

    Drawn as geometric gaps between chosen positions (a Bernoulli process), which costs
    about ``n·p`` random numbers instead of ``n`` uniforms, a comparison and a nonzero.
    The gaps come from uniforms by the inverse CDF, ``1 + floor(log(u) / log(1 - p))``
    with ``u`` in (0, 1]: about 2× cheaper than ``Tensor.geometric_`` here.
    """
    if p <= 0 or n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    if p >= 1:
        return torch.arange(n, device=device)
    chunk = int(n * p + 6.0 * (n * p * (1.0 - p)) ** 0.5) + 16  # almost always enough at once
    log_q = math.log1p(-p)
    parts, last = [], -1
    while last < n - 1:
        # float32 uniforms (~2x cheaper than float64): 1 - u lies in [2^-24, 1], so gaps
        # are cut at log(2^-24) / log(1 - p), a tail of probability 2^-24 (6e-8) per gap.
        # log(1) = 0 gives the smallest gap, 1.
        u = torch.rand(chunk, generator=generator, device=device)
        gaps = torch.log1p(u.neg_()).div_(log_q).floor_().clamp_(max=float(n)).to(torch.long).add_(1)
        pos = gaps.cumsum_(0).add_(last)
        parts.append(pos)
        last = int(pos[-1])
    pos = torch.cat(parts) if len(parts) > 1 else parts[0]
    # Sorted: a slice, not a boolean mask (several times cheaper).
    return pos[:int(torch.searchsorted(pos, n))]


def polynomial_bounded(x: torch.Tensor, eta: float, low: float, up: float, indpb: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Polynomial bounded mutation (Deb & Agrawal), per gene with probability ``indpb``.

    Same formulas as ``deap.tools.mutPolynomialBounded``: a gene is mutated where
    its uniform draw is ``<= indpb``; the perturbation is scaled by ``up - low`` and
    the result clipped to the bounds.

    Args:
        x: Genes, any shape, floating point; not modified.
        eta: Crowding degree: high values give offspring close to the parent.
        low: Lower bound of every gene.
        up: Upper bound of every gene.
        indpb: Probability that a gene is mutated.
        generator: Source of randomness (on ``x``'s device).

    Returns:
        The mutated genes, a new tensor of ``x``'s shape and dtype.
    """
    def step(genes: torch.Tensor) -> torch.Tensor:
        return polynomial_step(genes, _uniform(genes.shape, genes, generator), eta, low, up)

    return _mutate_sites(x, indpb, generator, step)


def _mutate_sites(x: torch.Tensor, indpb: float, generator: torch.Generator | None,
                  step) -> torch.Tensor:
    """A copy of ``x`` with ``step`` applied to a Bernoulli(``indpb``) choice of its elements.

    Only the chosen genes (10 % by default) go through the pow-heavy formula, found by
    flat index (gather/scatter is far cheaper than boolean-mask indexing). The sites are
    drawn before ``step`` draws its own noise.
    """
    flat = x.reshape(-1)
    index = bernoulli_positions(flat.numel(), indpb, generator, flat.device)
    out = flat.clone()
    out.index_copy_(0, index, step(flat.index_select(0, index)))
    return out.view_as(x)


def polynomial_bounded_pixels(pixels: torch.Tensor, eta: float, indpb: float,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """``polynomial_bounded`` of 8-bit pixels read as ``x / 255`` in [0, 1], re-quantised.

    Same draws and the same result as converting the whole batch to floats, mutating and
    rounding back, but only the chosen pixels (10 % by default) leave uint8: the direct
    encoding's hot path.

    Args:
        pixels: uint8 genes, any shape; not modified.
        eta: Crowding degree.
        indpb: Probability that a pixel is mutated.
        generator: Source of randomness (on ``pixels``' device).

    Returns:
        The mutated pixels, a new uint8 tensor of ``pixels``' shape.
    """
    def step(chosen: torch.Tensor) -> torch.Tensor:
        rand = torch.rand(chosen.shape, generator=generator, device=chosen.device, dtype=torch.float32)
        if chosen.device.type == "cpu":
            # The same arithmetic in NumPy (exactly rounded, see polynomial_step): the
            # mutation of a LeNet pop-200 batch took 0.97 against 1.40 ms with torch ops and
            # pow (AMD EPYC Zen 1, 1 thread).
            genes = chosen.numpy().astype(np.float32)
            genes /= 255.0
            stepped = polynomial_step(genes, rand.numpy(), eta, 0.0, 1.0)
            stepped *= 255.0
            return torch.from_numpy(np.rint(stepped, out=stepped).astype(np.uint8))  # half to even, as round_
        genes = chosen.to(torch.float32).div_(255.0)
        stepped = polynomial_step(genes, rand, eta, 0.0, 1.0)
        return stepped.mul_(255.0).round_().to(torch.uint8)

    return _mutate_sites(pixels, indpb, generator, step)


def sbx_from_uniforms(x1: torch.Tensor, x2: torch.Tensor, cross_u: torch.Tensor, rand: torch.Tensor,
                      swap_u: torch.Tensor, eta: float, low: float, up: float, indpb: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """DEAP's simulated binary bounded crossover given three uniform draws per gene."""
    cross = (cross_u <= indpb) & ((x1 - x2).abs() > 1e-14)
    lo = torch.minimum(x1, x2)
    hi = torch.maximum(x1, x2)
    diff = torch.where(cross, hi - lo, torch.ones_like(hi))  # avoid 0-division where unused
    expo = 1.0 / (eta + 1.0)

    def beta_q(beta: torch.Tensor) -> torch.Tensor:
        alpha = 2.0 - beta ** -(eta + 1.0)
        return torch.where(rand <= 1.0 / alpha, (rand * alpha) ** expo, (1.0 / (2.0 - rand * alpha)) ** expo)

    c1 = (0.5 * (lo + hi - beta_q(1.0 + 2.0 * (lo - low) / diff) * (hi - lo))).clamp(low, up)
    c2 = (0.5 * (lo + hi + beta_q(1.0 + 2.0 * (up - hi) / diff) * (hi - lo))).clamp(low, up)
    swap = swap_u <= 0.5
    y1 = torch.where(swap, c2, c1)
    y2 = torch.where(swap, c1, c2)
    return torch.where(cross, y1, x1), torch.where(cross, y2, x2)


def simulated_binary_bounded(x1: torch.Tensor, x2: torch.Tensor, eta: float, low: float, up: float,
                             indpb: float = 0.5, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated binary bounded crossover, gene-wise, of two equally shaped batches.

    Same formulas as ``deap.tools.cxSimulatedBinaryBounded``: each gene pair is
    crossed with probability ``indpb`` (DEAP hard-codes 0.5) where the parents
    differ; children are clipped to the bounds and randomly swapped.

    Args:
        x1: First parents (any shape); not modified.
        x2: Second parents, same shape as ``x1``.
        eta: Crowding degree: high values give children close to the parents.
        low: Lower bound of every gene.
        up: Upper bound of every gene.
        indpb: Probability that a gene pair is crossed.
        generator: Source of randomness.

    Returns:
        The two children.
    """
    draws = [_uniform(x1.shape, x1, generator) for _ in range(3)]
    return sbx_from_uniforms(x1, x2, *draws, eta=eta, low=low, up=up, indpb=indpb)


def paint_squares(pixels: torch.Tensor, top: np.ndarray, left: np.ndarray, side: np.ndarray,
                  colour: np.ndarray) -> torch.Tensor:
    """A copy of ``pixels`` (``B×C×H×W``) with one axis-aligned square painted on each image.

    Image ``i`` gets rows ``top[i] : top[i] + side[i]`` and columns ``left[i] : left[i] +
    side[i]`` set to ``colour[i]`` (one value per channel, in ``pixels``' dtype). A pure
    function of its arguments: the draws live in ``random_squares``.
    """
    n, _, h, w = pixels.shape
    # One lattice cell: with a period of h + w (at least a side longer than either axis) the
    # square does not come round again inside the image.
    once = np.full(n, h + w, dtype=np.int64)
    return paint_lattices(pixels, top, left, side, side, once, once, colour)


def random_squares(pixels: torch.Tensor, count: int, smallest: float, largest: float,
                   rng: np.random.Generator) -> torch.Tensor:
    """``count`` squares painted on each 8-bit image: the square mutation of the direct encoding.

    The localised, large-step change of Square Attack (Andriushchenko et al. 2020), without
    its bound: each square's side is log-uniform between ``smallest`` and ``largest`` (shares
    of the image's shorter side, at least one pixel), its place uniform where it fits, and
    each of its channels 0 or 255 (Square Attack's steps go to a corner of the allowed box).
    All draws come from ``rng`` (NumPy), so the result does not depend on the device.
    """
    n, c, h, w = pixels.shape
    short = min(h, w)
    # 1 <= lo <= hi <= short (shares are at most 1), so every rounded side is in [1, short].
    lo, hi = max(1.0, smallest * short), max(1.0, largest * short)
    out = pixels
    for _ in range(count):
        side = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).round().astype(np.int64)
        top = np.floor(rng.random(n) * (h - side + 1)).astype(np.int64)
        left = np.floor(rng.random(n) * (w - side + 1)).astype(np.int64)
        # Corners of the colour cube, not uniform colours: measured (EfficientNet-Lite0, flat
        # start, 10k evaluations, seed 0) median 0.49 % against 0.44 %.
        colour = rng.integers(0, 2, (n, c), dtype=np.int64) * 255
        out = paint_squares(out, top, left, side, colour)
    return out


def paint_lattices(pixels: torch.Tensor, top: np.ndarray, left: np.ndarray, side_y: np.ndarray,
                   side_x: np.ndarray, period_y: np.ndarray, period_x: np.ndarray,
                   colour: np.ndarray) -> torch.Tensor:
    """A copy of ``pixels`` (``B×C×H×W``) with one lattice of rectangles painted on each image.

    Image ``i`` gets every pixel ``(y, x)`` with ``(y - top[i]) mod period_y[i] < side_y[i]``
    and ``(x - left[i]) mod period_x[i] < side_x[i]`` set to ``colour[i]`` (one value per
    channel): a ``side_y × side_x`` rectangle repeated every ``period_y`` rows and
    ``period_x`` columns (stripes where a side equals its period). A pure function of its
    arguments: the draws live in ``random_lattices``.
    """
    n, _, h, w = pixels.shape
    device = pixels.device

    def inside(start: np.ndarray, side: np.ndarray, period: np.ndarray, size: int) -> torch.Tensor:
        at = torch.arange(size, device=device).view(1, -1)
        offset = torch.remainder(at - torch.as_tensor(start, device=device).view(-1, 1),
                                 torch.as_tensor(period, device=device).view(-1, 1))
        return offset < torch.as_tensor(side, device=device).view(-1, 1)  # B×size

    mask = inside(top, side_y, period_y, h).unsqueeze(2) & inside(left, side_x, period_x, w).unsqueeze(1)
    paint = torch.as_tensor(colour, device=device).to(pixels.dtype).view(n, -1, 1, 1)
    return torch.where(mask.unsqueeze(1), paint, pixels)


def _periods(rng: np.random.Generator, size, smallest: float, largest: float, short: int) -> np.ndarray:
    """Periods (an array of ``size``) log-uniform between ``smallest`` and ``largest`` shares
    of ``short`` pixels, at least 2 pixels (float64, not rounded: waves need no whole periods)."""
    lo, hi = max(2.0, smallest * short), max(2.0, largest * short)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def random_lattices(pixels: torch.Tensor, smallest: float, largest: float,
                    rng: np.random.Generator) -> torch.Tensor:
    """One lattice of rectangles painted on each 8-bit image: the direct encoding's
    ``mutation=lattice``.

    A square (``random_squares``) changes one place of the image, and a network that pools
    over the whole image (EfficientNet-Lite0 averages a 7×7 map) sees a local change diluted;
    a pattern repeated over the image, as CPPN images are, reaches every place at once. Each
    axis's period is log-uniform between ``smallest`` and ``largest`` (shares of the image's
    shorter side, at least 2 pixels), the rectangle's side on that axis uniform in 1 ..
    period, its offset uniform in 0 .. period - 1, and each channel of its colour 0 or 255.
    All draws come from ``rng`` (NumPy), so the result does not depend on the device.
    """
    n, c, h, w = pixels.shape
    period = _periods(rng, (2, n), smallest, largest, min(h, w)).round().astype(np.int64)
    side = 1 + np.floor(rng.random((2, n)) * period).astype(np.int64)
    start = np.floor(rng.random((2, n)) * period).astype(np.int64)
    colour = rng.integers(0, 2, (n, c), dtype=np.int64) * 255
    return paint_lattices(pixels, start[0], start[1], side[0], side[1], period[0], period[1], colour)


# Images a block of add_patterns works on: about 4 MB of float32 (6 ImageNet images, a whole
# MNIST batch), so a block's pattern, sum and rounding stay in the caches and no batch-sized
# float array is allocated (and page-faulted) each generation. Measured (Intel Xeon, 1 thread,
# the direct encoding's vary of 100 ImageNet images): waves 60 -> 29 ms, rings 66 -> 32 ms
# against the whole batch at once (torch out of place: 121 and 160 ms); the bits do not
# depend on the block (every step is per pixel).
PATTERN_BLOCK_FLOATS = 1 << 20


def add_patterns(pixels: torch.Tensor, patterns, amplitude: np.ndarray) -> torch.Tensor:
    """``pixels`` (``B×C×H×W`` uint8) plus ``patterns`` (``B×H×W`` in [-1, 1]) times
    ``amplitude`` (``B×C`` grey levels, signed: a channel gets the pattern or its negative),
    rounded (half to even) and clipped to 8 bits: a new tensor.

    ``patterns``: the tensor, or a function ``(start, stop)`` -> its rows ``start:stop``, so
    that a pattern is made a block at a time beside the pixels it changes. On the CPU the
    sum is NumPy's, in place on one block (``PATTERN_BLOCK_FLOATS``): the same float32
    products, sums and rounding as torch's, whose clamp and uint8 conversion are slow there.
    """
    n, c, h, w = pixels.shape
    rows = patterns if callable(patterns) else (lambda start, stop: patterns[start:stop])
    if pixels.device.type != "cpu":
        scale = torch.as_tensor(amplitude, dtype=torch.float32, device=pixels.device).view(n, c, 1, 1)
        return (pixels.to(torch.float32) + rows(0, n).unsqueeze(1) * scale).round_().clamp_(0, 255).to(torch.uint8)
    source = pixels.numpy()
    scale = np.asarray(amplitude, dtype=np.float32).reshape(n, c, 1, 1)
    out = np.empty(source.shape, dtype=np.uint8)
    step = max(1, PATTERN_BLOCK_FLOATS // (c * h * w))
    block = np.empty((min(step, n), c, h, w), dtype=np.float32)
    for start in range(0, n, step):
        stop = min(start + step, n)
        part = block[:stop - start]
        part[...] = source[start:stop]  # uint8 -> float32, exact
        part += rows(start, stop).numpy()[:, None] * scale[start:stop]
        np.rint(part, out=part)
        np.clip(part, 0, 255, out=part)
        out[start:stop] = part  # whole numbers in 0..255: exact
    return torch.from_numpy(out)


def _signed_amplitudes(rng: np.random.Generator, n: int, c: int, amplitude: tuple[float, float]) -> np.ndarray:
    """``n×c`` amplitudes: one uniform in ``amplitude`` per image, signed per channel."""
    amp = rng.uniform(amplitude[0], amplitude[1], n)
    return amp[:, None] * (rng.integers(0, 2, (n, c)) * 2 - 1)


def _axes(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates, ``1×H×1`` and ``1×1×W`` float32."""
    return (torch.arange(h, dtype=torch.float32, device=device).view(1, h, 1),
            torch.arange(w, dtype=torch.float32, device=device).view(1, 1, w))


def _per_image(values: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def random_waves(pixels: torch.Tensor, smallest: float, largest: float, rng: np.random.Generator,
                 amplitude: tuple[float, float] = (16.0, 128.0)) -> torch.Tensor:
    """One sine grating added to each 8-bit image: ``sin(2π (x cos θ + y sin θ) / period + φ)``.

    The period is log-uniform between ``smallest`` and ``largest`` (shares of the shorter
    side, at least 2 pixels), the angle θ uniform in [0, π), the phase φ in [0, 2π); the
    amplitude uniform in ``amplitude`` grey levels, added or subtracted per channel. Unlike
    a painted lattice it keeps what the parent had, shifted, so children build on it.
    """
    n, c, h, w = pixels.shape
    period = _periods(rng, n, smallest, largest, min(h, w))
    angle = rng.uniform(0, np.pi, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    scale = _signed_amplitudes(rng, n, c, amplitude)
    ys, xs = _axes(h, w, pixels.device)
    fx, fy = _per_image(np.cos(angle) / period, pixels.device), _per_image(np.sin(angle) / period, pixels.device)
    phi = _per_image(phase, pixels.device)

    def waves(a: int, b: int) -> torch.Tensor:  # sin(2π (x fx + y fy) + φ), in place on one block
        return torch.add(xs * fx[a:b], ys * fy[a:b]).mul_(2 * np.pi).add_(phi[a:b]).sin_()

    return add_patterns(pixels, waves, scale)


def random_rings(pixels: torch.Tensor, smallest: float, largest: float, rng: np.random.Generator,
                 amplitude: tuple[float, float] = (16.0, 128.0)) -> torch.Tensor:
    """Concentric rings added to each 8-bit image: ``sin(2π r / period + φ)``, ``r`` the
    distance to a centre uniform over the image; period, phase and amplitude as
    ``random_waves`` draws them."""
    n, c, h, w = pixels.shape
    period = _periods(rng, n, smallest, largest, min(h, w))
    cy, cx = rng.uniform(0, h, n), rng.uniform(0, w, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    scale = _signed_amplitudes(rng, n, c, amplitude)
    ys, xs = _axes(h, w, pixels.device)
    dy, dx = ys - _per_image(cy, pixels.device), xs - _per_image(cx, pixels.device)
    per, phi = _per_image(period, pixels.device), _per_image(phase, pixels.device)

    def rings(a: int, b: int) -> torch.Tensor:  # sin(2π r / period + φ), in place on one block
        r = torch.add(dy[a:b] ** 2, dx[a:b] ** 2).sqrt_()
        return r.mul_(2 * np.pi).div_(per[a:b]).add_(phi[a:b]).sin_()

    return add_patterns(pixels, rings, scale)


def random_choice_of(pixels: torch.Tensor, operators, rng: np.random.Generator) -> torch.Tensor:
    """Each image varied by one of ``operators`` (functions of a batch), chosen uniformly:
    the images that drew the same one go through it together, in the order listed."""
    which = rng.integers(0, len(operators), pixels.shape[0])
    out = torch.empty_like(pixels)  # every row drew an operator, so every row is written below
    for k, operator in enumerate(operators):
        rows = np.flatnonzero(which == k)
        if len(rows):
            copy_rows_(out, rows, operator(take_rows(pixels, rows)))  # a memcpy a row each way on the CPU
    return out
