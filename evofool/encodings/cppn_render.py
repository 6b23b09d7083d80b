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
def _input_planes(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``4×P`` float32 inputs on ``device`` (cached: the same for every genome)."""
    planes = input_planes_np(height, width).reshape(N_INPUTS, -1)
    return torch.from_numpy(planes.astype(np.float32)).to(device)


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
    """Padded, slot-indexed form of a batch of genomes (built with NumPy).

    Attributes:
        weights: ``B×T×T_h`` float32, ``weights[b, dst_slot, src_slot]``.
        n_src: ``T_h`` = inputs + hidden slots (outputs are never sources).
        layers: Per hidden layer ``(start, stop, groups)`` with groups ``(act, start, stop)``.
        out_act: ``B×C`` activation codes of the outputs.
    """

    weights: np.ndarray
    n_src: int
    layers: list[tuple[int, int, list[tuple[int, int, int]]]]
    out_act: np.ndarray


def build_layout(genomes: list[Genome], n_out: int) -> Layout:
    """Slots and dense per-genome weight matrices for a batch; no per-link Python."""
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

    slot = local.copy()  # inputs keep slots 0..3
    hid = np.flatnonzero(local >= fixed)
    layers: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    n_src = N_INPUTS
    if hid.size:
        depth = int(layer[hid].max())
        n_groups = depth * N_ACT
        key = (layer[hid] - 1) * N_ACT + act[hid]  # group = (layer, activation)
        combo = gidx[hid] * n_groups + key
        width = np.bincount(combo, minlength=b * n_groups).reshape(b, n_groups).max(axis=0)
        start = N_INPUTS + np.concatenate([[0], np.cumsum(width)[:-1]])
        order = np.argsort(combo, kind="stable")
        sc = combo[order]
        run_start = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        rank = np.arange(sc.size) - np.repeat(run_start, np.diff(np.r_[run_start, sc.size]))
        slot[hid[order]] = start[key[order]] + rank
        n_src = N_INPUTS + int(width.sum())
        for lay in range(depth):
            groups = [(a, int(start[lay * N_ACT + a]), int(start[lay * N_ACT + a] + width[lay * N_ACT + a]))
                      for a in range(N_ACT) if width[lay * N_ACT + a] > 0]
            if groups:
                layers.append((groups[0][1], groups[-1][2], groups))
    out = np.flatnonzero((local >= N_INPUTS) & (local < fixed))
    slot[out] = n_src + local[out] - N_INPUTS

    base = np.repeat(node_off[:-1], n_links)
    src = slot[np.concatenate([g.link_src for g in genomes]) + base]
    dst = slot[np.concatenate([g.link_dst for g in genomes]) + base]
    weights = np.zeros((b, n_src + n_out, n_src), dtype=np.float32)
    weights[np.repeat(np.arange(b), n_links), dst, src] = np.concatenate([g.link_weight for g in genomes])
    return Layout(weights=weights, n_src=n_src, layers=layers, out_act=act[out].reshape(b, n_out))


def _render_chunk(genomes: list[Genome], n_out: int, planes: torch.Tensor) -> torch.Tensor:
    """``B×C×P`` float32 output values (already squashed to [0, 1]) of one chunk."""
    lay = build_layout(genomes, n_out)
    device = planes.device
    b, p = len(genomes), planes.shape[1]
    w = torch.from_numpy(lay.weights).to(device)
    vals = torch.empty(b, lay.n_src, p, dtype=torch.float32, device=device)
    vals[:, :N_INPUTS] = planes
    for start, stop, groups in lay.layers:
        pre = torch.bmm(w[:, start:stop, :start], vals[:, :start])
        for code, g0, g1 in groups:
            apply_activation_(code, pre[:, g0 - start:g1 - start])
        vals[:, start:stop] = pre
    out = torch.bmm(w[:, lay.n_src:], vals)  # B×C×P
    flat = out.view(b * n_out, p)
    codes = lay.out_act.reshape(-1)
    for code in range(N_ACT):
        rows = np.flatnonzero(codes == code)
        if rows.size:
            idx = torch.from_numpy(rows).to(device)
            flat.index_copy_(0, idx, apply_activation_(code, flat.index_select(0, idx)))
    return out.abs_().clamp_(max=1.0)


def _chunks(genomes: list[Genome], pixels: int, max_elements: int) -> list[list[Genome]]:
    """Consecutive chunks whose node-value tensor stays near ``max_elements`` floats."""
    chunks, cur, widest = [], [], 0
    for g in genomes:
        w = max(widest, g.n_nodes)
        if cur and (len(cur) + 1) * w * pixels > max_elements:
            chunks.append(cur)
            cur, w = [], g.n_nodes
        cur.append(g)
        widest = w
    if cur:
        chunks.append(cur)
    return chunks


def render_float(genomes: list[Genome], image_shape: tuple[int, int, int], device: torch.device,
                 max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """``B×C×H×W`` float32 images in [0, 1] (RGB for C=3), before quantisation.

    Genomes are rendered in as few chunks as memory allows (one for small images); each
    chunk is one layer-by-layer pass over all its genomes.
    """
    c, h, wd = image_shape
    device = torch.device(device)
    if not genomes:
        return torch.empty(0, c, h, wd, device=device)
    planes = _input_planes(h, wd, device)
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
