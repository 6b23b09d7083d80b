"""Rendering CPPNs: a batched renderer for many topologies at once, and a plain reference.

Per pixel the CPPN sees x and y in [-1, 1] (column and row; ``2*i/(n-1) - 1``), the
distance from the centre ``d = sqrt(x² + y²)`` (in [0, √2], not rescaled) and a bias 1.
Each output value is squashed to a pixel by ``p = min(|out|, 1)``. Grayscale models use
the one output as the pixel; colour models read the three outputs as **HSV** (hue,
saturation, value, each in [0, 1]; hue 0 and 1 are both red) and convert to RGB.
Images are quantised as ``round(255 * p)`` (round half to even) to uint8.

Batched layout (no padding): all non-input nodes of all genomes of a batch are rows of
one value tensor, sorted by (layer, activation, genome); rows 0..3 are the inputs,
shared by every genome, and the outputs come last (they are sinks). Layer by layer,
each link's source row is gathered and weighted, the terms are scatter-added into
their destination rows (``index_add_``), and each activation is applied in place to
its contiguous run of rows. Work is therefore proportional to links + nodes of the
batch (CPPNs are sparse: ~1.3 links per node), not to a padded dense square; the loop
runs over the batch's layers, never over genomes, pixels or links. On the CPU pixels
are processed in cache-sized tiles, and squashing, HSV→RGB and quantisation happen
per tile while the values are still in cache.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import numpy as np
import torch

from evofool.encodings.cppn_genome import N_INPUTS, Genome, reached_from

# GPU: about how many node values (rows × pixels) one chunk may hold (bounds memory).
DEFAULT_CHUNK_ELEMENTS = 2**27
# CPU: node rows per chunk, and node values per pixel tile (sized for the cache).
CPU_CHUNK_ROWS = 2048
# 2**20 float64 values = 8 MiB, within L2+L3 here. Measured (benchmarks/render.py, batch 200,
# 2 cores): 2**18 → 2**20 took 28×28 from ~25k to ~43k genomes/s (a quarter of the Python
# layer loops: one tile per image instead of four) and left 224×224 unchanged (~230/s).
TILE_ELEMENTS = 2**20


# --- inputs and activations ------------------------------------------------------------

def _axis(n: int) -> np.ndarray:
    return 2.0 * np.arange(n, dtype=np.float64) / (n - 1) - 1.0 if n > 1 else np.zeros(1)


def input_planes_np(height: int, width: int) -> np.ndarray:
    """``4×H×W`` float64 inputs x, y, d, bias."""
    y, x = np.meshgrid(_axis(height), _axis(width), indexing="ij")
    return np.stack([x, y, np.sqrt(x * x + y * y), np.ones_like(x)])


@functools.lru_cache(maxsize=16)
def _input_planes(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``4×P`` inputs on ``device`` (cached: the same for every genome)."""
    planes = input_planes_np(height, width).reshape(N_INPUTS, -1)
    return torch.from_numpy(planes).to(device=device, dtype=dtype)


def apply_activation_(code: int, x: torch.Tensor) -> torch.Tensor:
    """Applies activation ``code`` to ``x`` in place.

    0 sine ``sin(p)``; 1 sigmoid scaled to (-1, 1): ``2σ(p) - 1 = tanh(p/2)``;
    2 gaussian ``exp(-p²)``; 3 linear clipped to [-1, 1].
    """
    if code == 0:
        return x.sin_()
    if code == 1:
        return x.mul_(0.5).tanh_()
    if code == 2:
        return x.square_().neg_().exp_()
    return x.clamp_(-1.0, 1.0)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV → RGB along dim 1 (``B×3×...``, all in [0, 1]); branch-free, continuous in hue."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    shape = (1, 3) + (1,) * (hsv.dim() - 2)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(shape)
    k = torch.remainder(n + 6.0 * h, 6.0)
    f = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v - v * s * f


# --- batched renderer -------------------------------------------------------------------

@dataclass
class Layout:
    """One batch flattened into a single node order (built with NumPy).

    Row 0..3 of the value tensor are the shared inputs; then every non-input node of
    every genome that has a path to an output, sorted by (layer,
    activation, genome, position), outputs last (as layer ``depth + 1``). A step is a run
    of rows of one layer; within it each activation owns a contiguous run of rows.

    Each node's first incoming link (by source row) is stored per row, so a layer
    starts with one dense gather-multiply into its rows; a node without links gets
    ``0 * bias``. Only the remaining links (~a quarter: CPPNs are sparse) go through the
    slower scatter-add.

    Attributes:
        n_rows: Rows of the value tensor.
        first_src, first_weight: Per non-input row (row - 4), its first term.
        extra_src, extra_dst, extra_weight: The other links, sorted by (destination, source).
        steps: ``(row_start, row_stop, extra_start, extra_stop, groups)`` per layer, with
            groups ``(activation, row_start, row_stop)``.
        out_rows: ``B*C`` rows of the outputs in (genome, channel) order.
        first_link, extra_link: Where ``first_weight`` (-1: none) and ``extra_weight``
            come from in the batch's links concatenated genome by genome (so weights
            given as one tensor, as ``render_differentiable`` takes them, land in place).
    """

    n_rows: int
    first_src: np.ndarray
    first_weight: np.ndarray
    extra_src: np.ndarray
    extra_dst: np.ndarray
    extra_weight: np.ndarray
    steps: list[tuple[int, int, int, int, list[tuple[int, int, int]]]]
    out_rows: np.ndarray
    first_link: np.ndarray
    extra_link: np.ndarray


def build_layout(genomes: list[Genome], n_out: int) -> Layout:
    """Rows and sorted links for a batch: array concatenation and sorting, no per-link Python."""
    b = len(genomes)
    fixed = N_INPUTS + n_out
    n_nodes = np.fromiter((g.n_nodes for g in genomes), np.int64, b)
    n_links = np.fromiter((g.n_links for g in genomes), np.int64, b)
    node_off = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(n_nodes, out=node_off[1:])
    act = np.concatenate([g.node_act for g in genomes]).astype(np.int64)
    layer = np.concatenate([g.node_layer for g in genomes]).astype(np.int64)
    gidx = np.repeat(np.arange(b), n_nodes)
    local = np.arange(node_off[-1]) - node_off[gidx]

    is_out = (local >= N_INPUTS) & (local < fixed)
    layer[is_out] = layer.max(initial=0) + 1  # outputs are sinks: evaluate them last
    base = np.repeat(node_off[:-1], n_links)
    link_src = np.concatenate([g.link_src for g in genomes]) + base  # batch-wide node indices
    link_dst = np.concatenate([g.link_dst for g in genomes]) + base
    # Only nodes with a path to an output are computed: the others (left by remove_link and
    # remove_node) change no pixel. 10 % of the hidden nodes of a 200k-evaluation ImageNet
    # archive (curiosity-bold-fine80-30-waves seed 0, 32.7 nodes a genome). A kept node keeps
    # all its links, so its sum and the image are the same bits.
    alive = reached_from(is_out, link_dst, link_src)  # the outputs and every node with a path to one
    nodes = np.flatnonzero((local >= N_INPUTS) & alive)
    order = nodes[np.lexsort((local[nodes], gidx[nodes], act[nodes], layer[nodes]))]
    row = local.copy()  # inputs: the shared rows 0..3
    row[order] = N_INPUTS + np.arange(order.size)

    kept = np.flatnonzero(alive[link_dst])  # the links into computed nodes, by batch position
    src, dst = row[link_src[kept]], row[link_dst[kept]]
    weight = np.concatenate([g.link_weight for g in genomes])[kept]
    # Summation order inside a node = its sources' order, which for one genome's nodes
    # does not depend on the rest of the batch: a genome renders the same in any batch.
    link_order = np.lexsort((src, dst))
    src, dst, weight = src[link_order], dst[link_order], weight[link_order]
    link_order = kept[link_order]  # each link's place in the batch's links (first_link, extra_link)

    key_layer, key_act = layer[order], act[order]
    cut = np.flatnonzero(np.r_[True, (key_layer[1:] != key_layer[:-1]) | (key_act[1:] != key_act[:-1]), True])
    steps: list[tuple[int, int, int, int, list[tuple[int, int, int]]]] = []
    for g0, g1 in zip(cut[:-1], cut[1:]):
        group = (int(key_act[g0]), N_INPUTS + int(g0), N_INPUTS + int(g1))
        if steps and key_layer[g0] == key_layer[steps[-1][4][0][1] - N_INPUTS]:
            steps[-1][4].append(group)
        else:
            steps.append((group[1], 0, 0, 0, [group]))
    first = np.r_[True, dst[1:] != dst[:-1]] if dst.size else np.zeros(0, dtype=bool)
    first_src = np.full(order.size, N_INPUTS - 1, dtype=np.int64)  # bias row, weight 0
    first_weight = np.zeros(order.size, dtype=np.float32)
    first_link = np.full(order.size, -1, dtype=np.int64)
    first_src[dst[first] - N_INPUTS] = src[first]
    first_weight[dst[first] - N_INPUTS] = weight[first]
    first_link[dst[first] - N_INPUTS] = link_order[first]
    extra = ~first
    extra_dst = dst[extra]
    bounds = np.searchsorted(extra_dst, [s[0] for s in steps] + [N_INPUTS + order.size])
    steps = [(s[0], s[4][-1][2], int(bounds[i]), int(bounds[i + 1]), s[4]) for i, s in enumerate(steps)]
    return Layout(n_rows=N_INPUTS + order.size, first_src=first_src, first_weight=first_weight,
                  extra_src=src[extra], extra_dst=extra_dst, extra_weight=weight[extra],
                  steps=steps, out_rows=row[np.flatnonzero(is_out)], first_link=first_link,
                  extra_link=link_order[extra])


def _render_chunk(genomes: list[Genome], n_out: int, planes: torch.Tensor, out: torch.Tensor,
                  tile_elements: int | None) -> None:
    """Renders one chunk into ``out`` (``B×C×P``, float or uint8 = quantised).

    On the CPU the pixels go in tiles of about ``tile_elements`` node values, so a tile
    stays in cache through all layers, squashing, colour conversion and quantisation
    (every step is memory-bound; streaming whole images through RAM ~10 times is
    what made naive batching slower than one genome at a time at 224×224).
    """
    lay = build_layout(genomes, n_out)
    device, dtype = planes.device, planes.dtype
    b, n_pix = len(genomes), planes.shape[1]
    def tensor(a: np.ndarray, float_: bool = False) -> torch.Tensor:
        t = torch.from_numpy(a).to(device=device, dtype=dtype if float_ else torch.int64)
        return t.unsqueeze(1) if float_ else t

    first_src, first_weight = tensor(lay.first_src), tensor(lay.first_weight, True)
    extra_src, extra_weight = tensor(lay.extra_src), tensor(lay.extra_weight, True)
    extra_dst = tensor(lay.extra_dst)
    dst_rel = [extra_dst[x0:x1] - r0 for r0, _, x0, x1, _ in lay.steps]
    out_rows = torch.from_numpy(lay.out_rows).to(device)
    width = n_pix if tile_elements is None else max(64, min(n_pix, tile_elements // lay.n_rows))
    vals = torch.empty(lay.n_rows, width, dtype=dtype, device=device)
    for p0 in range(0, n_pix, width):
        p1 = min(p0 + width, n_pix)
        v = vals[:, :p1 - p0]
        v[:N_INPUTS] = planes[:, p0:p1]
        for (r0, r1, x0, x1, groups), d_rel in zip(lay.steps, dst_rel):
            # First term of every node: gather + multiply straight into the layer's rows;
            # then the other links: gather, weight, scatter-add. index_select, not advanced
            # indexing (v[rows]): the same copies, measured 1.30x faster rendering of 100
            # champions of a 200k ImageNet archive at 224x224 in float32 (1.09x float64,
            # 1.07x 28x28; Intel Xeon, torch 2.13, 1 thread, interleaved).
            block = v[r0:r1]
            i0, i1 = r0 - N_INPUTS, r1 - N_INPUTS
            torch.mul(torch.index_select(v, 0, first_src[i0:i1]), first_weight[i0:i1], out=block)
            if x1 > x0:
                block.index_add_(0, d_rel, torch.index_select(v, 0, extra_src[x0:x1]).mul_(extra_weight[x0:x1]))
            for code, g0, g1 in groups:
                apply_activation_(code, block[g0 - r0:g1 - r0])
        pix = torch.index_select(v, 0, out_rows).abs_().clamp_(max=1.0).view(b, n_out, p1 - p0)
        if n_out == 3:
            pix = hsv_to_rgb(pix)
        if out.dtype == torch.uint8:
            pix = pix.mul_(255.0).round_()  # round half to even, then exact cast
        out[:, :, p0:p1] = pix


def _chunks(genomes: list[Genome], max_rows: int) -> list[list[Genome]]:
    """Consecutive chunks of at most about ``max_rows`` node rows each."""
    chunks, cur, rows = [], [], 0
    for g in genomes:
        if cur and rows + g.n_nodes > max_rows:
            chunks.append(cur)
            cur, rows = [], 0
        cur.append(g)
        rows += g.n_nodes
    if cur:
        chunks.append(cur)
    return chunks


def render_batch(genomes: list[Genome], image_shape: tuple[int, int, int], device: torch.device | str,
                 dtype: torch.dtype = torch.float64, quantise: bool = True,
                 max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Renders a batch: ``B×C×H×W`` uint8 (``quantise``) or floats in [0, 1] of ``dtype``.

    float64 is the default arithmetic because CPPNs are badly conditioned (weights up
    to 10 feeding ``sin``): float32 errors reach ~3e-4 on deep genomes, float64 ones
    stay far below one grey level. Genomes go in chunks of node rows (bounding memory
    and, on the CPU, the tile width); each chunk is one layer-by-layer pass.
    """
    c, h, w = image_shape
    device = torch.device(device)
    out = torch.empty(len(genomes), c, h * w, dtype=torch.uint8 if quantise else dtype, device=device)
    if not genomes:
        return out.view(0, c, h, w)
    planes = _input_planes(h, w, device, dtype)
    on_cpu = device.type == "cpu"
    max_rows = CPU_CHUNK_ROWS if on_cpu else max(1, max_elements // (h * w))
    start = 0
    for chunk in _chunks(list(genomes), max_rows):
        _render_chunk(chunk, c, planes, out[start:start + len(chunk)], TILE_ELEMENTS if on_cpu else None)
        start += len(chunk)
    return out.view(len(genomes), c, h, w)


def _activation(code: int, x: torch.Tensor) -> torch.Tensor:
    """``apply_activation_`` out of place (autograd keeps its inputs)."""
    if code == 0:
        return torch.sin(x)
    if code == 1:
        return torch.tanh(x * 0.5)
    if code == 2:
        return torch.exp(-(x * x))
    return x.clamp(-1.0, 1.0)


def render_differentiable(genomes: list[Genome], weights: torch.Tensor,
                          image_shape: tuple[int, int, int]) -> torch.Tensor:
    """``B×C×H×W`` images in [0, 1] of ``genomes`` with their link weights replaced by
    ``weights`` (all links, concatenated genome by genome, in each genome's link order),
    differentiable with respect to ``weights``: the batched renderer's layout and
    arithmetic, layer by layer, out of place and untiled, in ``weights``' dtype and on
    its device. For gradient steps on weights (``evofool.emitters.GradientRefineEmitter``);
    the images a run scores come from ``render_batch``.
    """
    c, h, w = image_shape
    lay = build_layout(genomes, c)
    device, dtype = weights.device, weights.dtype
    index = functools.partial(torch.as_tensor, dtype=torch.long, device=device)
    links = torch.cat([weights, weights.new_zeros(1)])  # index -1: the weight-0 bias term
    first_weight = links[index(lay.first_link)].unsqueeze(1)
    extra_weight = links[index(lay.extra_link)].unsqueeze(1)
    first_src, extra_src, extra_dst = index(lay.first_src), index(lay.extra_src), index(lay.extra_dst)
    v = _input_planes(h, w, device, dtype)
    for r0, r1, x0, x1, groups in lay.steps:
        i0, i1 = r0 - N_INPUTS, r1 - N_INPUTS
        block = v[first_src[i0:i1]] * first_weight[i0:i1]
        if x1 > x0:
            block = block.index_add(0, extra_dst[x0:x1] - r0, v[extra_src[x0:x1]] * extra_weight[x0:x1])
        v = torch.cat([v, *(_activation(code, block[g0 - r0:g1 - r0]) for code, g0, g1 in groups)])
    pix = v[index(lay.out_rows)].abs().clamp(max=1.0).view(len(genomes), c, h * w)
    if c == 3:
        pix = hsv_to_rgb(pix)
    return pix.view(len(genomes), c, h, w)


# --- reference renderer (tests only) ------------------------------------------------------

_REF_ACT = (
    np.sin,
    lambda p: 2.0 / (1.0 + np.exp(-p)) - 1.0,
    lambda p: np.exp(-p * p),
    lambda p: np.clip(p, -1.0, 1.0),
)


def render_one_reference(genome: Genome, image_shape: tuple[int, int, int]) -> np.ndarray:
    """One genome, node by node and link by link in float64; ``C×H×W`` in [0, 1].

    Deliberately naive and independent of the batched code (colour via ``colorsys``).
    """
    c, h, w = image_shape
    values: list[np.ndarray | None] = [None] * genome.n_nodes
    for i, plane in enumerate(input_planes_np(h, w)):
        values[i] = plane
    for v in np.argsort(genome.node_layer, kind="stable"):
        if v < N_INPUTS:
            continue
        pre = np.zeros((h, w))
        for k in range(genome.n_links):
            if genome.link_dst[k] == v:
                pre = pre + float(genome.link_weight[k]) * values[genome.link_src[k]]
        values[v] = _REF_ACT[genome.node_act[v]](pre)
    out = np.stack([np.minimum(np.abs(values[N_INPUTS + i]), 1.0) for i in range(c)])
    if c == 3:
        rgb = np.empty_like(out)
        for i in range(h):
            for j in range(w):
                rgb[:, i, j] = colorsys.hsv_to_rgb(*out[:, i, j])
        out = rgb
    return out
