"""Rendering CPPNs: a batched renderer for many topologies at once, and a plain reference.

Per pixel the CPPN sees x and y in [-1, 1] (column and row; ``2*i/(n-1) - 1``), the
distance from the centre ``d = sqrt(x² + y²)`` (in [0, √2], not rescaled) and a bias 1.
Each output value is squashed to a pixel by ``p = min(|out|, 1)``. Grayscale models use
the one output as the pixel; colour models read the three outputs as **HSV** (hue,
saturation, value, each in [0, 1]; hue 0 and 1 are both red) and convert to RGB.
Images are quantised as ``round(255 * p)`` (round half to even) to uint8.

Batched layout: every genome's hidden nodes are grouped by (layer, activation); each
group gets as many slots as the largest count over the batch (padding slots have zero
weights in and out, so they cannot change anything). The node values of the batch live
in one ``B×T×P`` tensor (T slots, P pixels): slots 0..3 are the inputs, then the hidden
groups layer by layer, then the C outputs. Layer l is one ``torch.bmm`` of the weights
from all earlier slots (``B×M_l×S_l``) with their values (``B×S_l×P``); each activation is
then applied in place to its contiguous slice, so no function is computed on a slot
that does not use it. Outputs sit after the last hidden layer (they are sinks, so any
later position is valid) and their activations are applied per row via index_select.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import numpy as np
import torch

from evofool.encodings.cppn_genome import N_ACT, N_INPUTS, Genome

# Roughly how many float32 node values (genomes × slots × pixels) one chunk may hold.
DEFAULT_CHUNK_ELEMENTS = 2**25


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
    every genome, sorted by (layer, activation, genome, position), outputs last (as
    layer ``depth + 1``). A step is a run of rows of one layer; within it each
    activation owns a contiguous run of rows.

    Attributes:
        n_rows: Rows of the value tensor.
        link_src, link_dst, link_weight: Links sorted by (destination row, source row).
        steps: ``(row_start, row_stop, link_start, link_stop, groups)`` per layer, with
            groups ``(activation, row_start, row_stop)``.
        out_rows: ``B*C`` rows of the outputs in (genome, channel) order.
    """

    n_rows: int
    link_src: np.ndarray
    link_dst: np.ndarray
    link_weight: np.ndarray
    steps: list[tuple[int, int, int, int, list[tuple[int, int, int]]]]
    out_rows: np.ndarray


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
    nodes = np.flatnonzero(local >= N_INPUTS)
    order = nodes[np.lexsort((local[nodes], gidx[nodes], act[nodes], layer[nodes]))]
    row = local.copy()  # inputs: the shared rows 0..3
    row[order] = N_INPUTS + np.arange(order.size)

    base = np.repeat(node_off[:-1], n_links)
    src = row[np.concatenate([g.link_src for g in genomes]) + base]
    dst = row[np.concatenate([g.link_dst for g in genomes]) + base]
    weight = np.concatenate([g.link_weight for g in genomes])
    # Summation order inside a node = its sources' order, which for one genome's nodes
    # does not depend on the rest of the batch: a genome renders the same in any batch.
    link_order = np.lexsort((src, dst))
    src, dst, weight = src[link_order], dst[link_order], weight[link_order]

    key_layer, key_act = layer[order], act[order]
    cut = np.flatnonzero(np.r_[True, (key_layer[1:] != key_layer[:-1]) | (key_act[1:] != key_act[:-1]), True])
    steps: list[tuple[int, int, int, int, list[tuple[int, int, int]]]] = []
    for g0, g1 in zip(cut[:-1], cut[1:]):
        group = (int(key_act[g0]), N_INPUTS + int(g0), N_INPUTS + int(g1))
        if steps and key_layer[g0] == key_layer[steps[-1][4][0][1] - N_INPUTS]:
            steps[-1][4].append(group)
        else:
            steps.append((group[1], 0, 0, 0, [group]))
    bounds = np.searchsorted(dst, [s[0] for s in steps] + [N_INPUTS + order.size])
    steps = [(s[0], s[4][-1][2], int(bounds[i]), int(bounds[i + 1]), s[4]) for i, s in enumerate(steps)]
    return Layout(n_rows=N_INPUTS + order.size, link_src=src, link_dst=dst, link_weight=weight,
                  steps=steps, out_rows=row[np.flatnonzero(is_out)])


def _render_chunk(genomes: list[Genome], n_out: int, planes: torch.Tensor) -> torch.Tensor:
    """``B×C×P`` output values (already squashed to [0, 1]) of one chunk."""
    lay = build_layout(genomes, n_out)
    device, dtype = planes.device, planes.dtype
    src = torch.from_numpy(lay.link_src).to(device)
    dst = torch.from_numpy(lay.link_dst).to(device)
    weight = torch.from_numpy(lay.link_weight).to(device=device, dtype=dtype).unsqueeze(1)
    vals = torch.empty(lay.n_rows, planes.shape[1], dtype=dtype, device=device)
    vals[:N_INPUTS] = planes
    for r0, r1, l0, l1, groups in lay.steps:
        # Gather the sources of this layer's links, weight them, scatter-add per node.
        # (Advanced indexing: much faster than index_select for long rows on CPU.)
        contrib = vals[src[l0:l1]].mul_(weight[l0:l1])
        block = vals[r0:r1].zero_()
        block.index_add_(0, dst[l0:l1] - r0, contrib)
        for code, g0, g1 in groups:
            apply_activation_(code, block[g0 - r0:g1 - r0])
    out = vals[torch.from_numpy(lay.out_rows).to(device)]
    return out.abs_().clamp_(max=1.0).view(len(genomes), n_out, -1)


def _chunks(genomes: list[Genome], pixels: int, max_elements: int) -> list[list[Genome]]:
    """Consecutive chunks whose node-value tensor stays near ``max_elements`` floats."""
    chunks, cur, rows = [], [], 0
    for g in genomes:
        need = (g.n_nodes + g.n_links) * pixels  # node values + gathered link terms
        if cur and rows + need > max_elements:
            chunks.append(cur)
            cur, rows = [], 0
        cur.append(g)
        rows += need
    if cur:
        chunks.append(cur)
    return chunks


def render_float(genomes: list[Genome], image_shape: tuple[int, int, int], device: torch.device,
                 max_elements: int = DEFAULT_CHUNK_ELEMENTS, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``B×C×H×W`` images in [0, 1] (RGB for C=3) in ``dtype``, before quantisation.

    Genomes are rendered in as few chunks as memory allows (one for small images); each
    chunk is one layer-by-layer pass over all its genomes. float64 is the default
    because CPPNs are badly conditioned (weights up to 10 feeding ``sin``): float32
    errors reach ~3e-4 on deep genomes, float64 ones stay far below one grey level.
    """
    c, h, wd = image_shape
    device = torch.device(device)
    if not genomes:
        return torch.empty(0, c, h, wd, device=device)
    planes = _input_planes(h, wd, device, dtype)
    parts = [_render_chunk(ch, c, planes) for ch in _chunks(list(genomes), h * wd, max_elements)]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    if c == 3:
        out = hsv_to_rgb(out)
    return out.view(len(genomes), c, h, wd)


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images → uint8 ``round(255 * p)``."""
    return images.mul(255.0).round_().to(torch.uint8)


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
