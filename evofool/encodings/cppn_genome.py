"""CPPN genomes: small immutable NumPy graphs and their NEAT-style mutations.

Node layout (by position in the node arrays, which never changes meaning):

* ``0..3``: the inputs x, y, d, bias (ids 0..3, no activation);
* ``4..4+C-1``: the C outputs (ids 4..4+C-1);
* the rest: hidden nodes, ids from a run-wide counter, kept in ascending id order.

Links always go from an input or hidden node to a hidden or output node (outputs are
sinks, inputs are sources) and the graph is kept acyclic. ``node_layer`` is the longest
path from the inputs (inputs 0, a hidden node with no incoming link 1), so every link
goes from a lower layer to a higher one: the renderer evaluates layer by layer.

Genomes are frozen and their arrays read-only, so the archive can share one object
between slots and a child never aliases a parent's mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from evofool.encodings.base import torch_generator
from evofool.operators import polynomial_bounded, polynomial_step

ACTIVATIONS: tuple[str, ...] = ("sine", "sigmoid", "gaussian", "linear")
N_ACT = len(ACTIVATIONS)
N_INPUTS = 4  # x, y, d, bias
NO_ACT = -1  # activation code of the input nodes


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Genome:
    """One CPPN. Link endpoints are positions in the node arrays.

    Attributes:
        gid: Run-wide unique genome id.
        parent: ``gid`` of the parent, -1 for a random genome.
        n_out: Number of output nodes (1 grayscale, 3 colour).
        node_id: ``(N,)`` int64 node ids, ascending.
        node_act: ``(N,)`` int8 activation codes (index into ``ACTIVATIONS``; -1 for inputs).
        node_layer: ``(N,)`` int32 longest-path depth from the inputs.
        link_id: ``(L,)`` int64 innovation ids.
        link_src: ``(L,)`` int32 source positions.
        link_dst: ``(L,)`` int32 destination positions.
        link_weight: ``(L,)`` float32 weights.
    """

    gid: int
    parent: int
    n_out: int
    node_id: np.ndarray
    node_act: np.ndarray
    node_layer: np.ndarray
    link_id: np.ndarray
    link_src: np.ndarray
    link_dst: np.ndarray
    link_weight: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in (("node_id", np.int64), ("node_act", np.int8), ("node_layer", np.int32),
                            ("link_id", np.int64), ("link_src", np.int32), ("link_dst", np.int32),
                            ("link_weight", np.float32)):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype))

    @property
    def n_nodes(self) -> int:
        return int(self.node_id.size)

    @property
    def n_links(self) -> int:
        return int(self.link_id.size)

    @property
    def n_hidden(self) -> int:
        return self.n_nodes - N_INPUTS - self.n_out


@dataclass
class Counters:
    """Run-wide id counters (encoding state: saved so a resumed run is bit-identical)."""

    next_genome: int = 0
    next_node: int = 0
    next_link: int = 0


@dataclass(frozen=True)
class MutationRates:
    """Per-offspring mutation parameters (defaults: the original paper's code, but eta 40 not 15)."""

    p_weight: float = 0.1
    eta: float = 40.0
    weight_bound: float = 10.0
    p_activation: float = 0.1
    p_add_link: float = 0.5
    p_remove_link: float = 0.3
    p_add_node: float = 0.5
    p_remove_node: float = 0.2
    # Share of children that change only link weights (no activation redrawn, no structural
    # operator tried); 0 as in the paper, where every child is offered every operator.
    p_weights_only: float = 0.0
    # ... given only to children of parents at least this confident of their class (0: all).
    weights_only_above: float = 0.0
    # The weights-only children's own per-weight probability and eta (0: p_weight and eta, as
    # runs recorded before them; then a child whose draw moved no weight mutates as usual).
    # With a probability, each such child moves at least one weight (mutate_some_weights).
    weights_only_p_weight: float = 0.0
    weights_only_eta: float = 0.0
    # Per-offspring probability of adding one wave or ring pattern (_Work.add_wave), and the
    # bound of the weight that adds it to an output; 0 as in the paper (nothing drawn).
    p_add_wave: float = 0.0
    wave_weight: float = 1.0
    # Share of the weights-only children that move every link into an output node by a
    # Gaussian step of weights_only_sigma (step_output_links) and no other weight; the rest
    # take the polynomial steps above. 0 as before it (nothing drawn), 1 all of them.
    weights_only_output: float = 0.0
    weights_only_sigma: float = 0.02


# --- graph helpers (all vectorised over links; graphs have tens of nodes) ---------------

def compute_layers(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Longest-path depth of every node (inputs 0, others at least 1).

    Raises:
        ValueError: if the links contain a cycle.
    """
    layer = np.ones(n_nodes, dtype=np.int64)
    layer[:N_INPUTS] = 0
    # Bellman-Ford style relaxation: converges in at most n_nodes rounds on a DAG.
    # Layers only grow from round to round, so equal sums mean nothing changed.
    total = int(layer.sum())
    for _ in range(n_nodes + 1):
        new = layer.copy()
        if src.size:
            np.maximum.at(new, dst, layer[src] + 1)
        new_total = int(new.sum())
        if new_total == total:
            return layer.astype(np.int32)
        layer, total = new, new_total
    raise ValueError("CPPN graph has a cycle")


def reached_from(start: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Boolean per node: in ``start`` (a boolean mask) or at the end of a path from one along
    the links ``src -> dst`` (pass them swapped to follow the links backwards)."""
    reached = np.array(start, dtype=bool, copy=True)
    count = int(np.count_nonzero(reached))
    while True:  # the reached set only grows: an equal count means it stopped growing
        reached[dst[reached[src]]] = True
        new_count = int(np.count_nonzero(reached))
        if new_count == count:
            return reached
        count = new_count


def reachable_from_inputs(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Boolean ``(N,)``: nodes reachable from some input (inputs included)."""
    inputs = np.zeros(n_nodes, dtype=bool)
    inputs[:N_INPUTS] = True
    return reached_from(inputs, src, dst)


def outputs_connected(n_out: int, n_nodes: int, src: np.ndarray, dst: np.ndarray) -> bool:
    """True when every output is reachable from some input."""
    return bool(reachable_from_inputs(n_nodes, src, dst)[N_INPUTS:N_INPUTS + n_out].all())


def transitive_closure(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``reach[i, j]``: a path of length >= 1 goes from node i to node j."""
    reach = np.zeros((n_nodes, n_nodes), dtype=bool)
    reach[src, dst] = True
    # Repeated squaring: log2(N) boolean matrix products; the set of paths only grows.
    count = int(np.count_nonzero(reach))
    while True:
        m = reach.astype(np.int32)
        new = reach | ((m @ m) > 0)
        new_count = int(np.count_nonzero(new))
        if new_count == count:
            return reach
        reach, count = new, new_count


def check_genome(g: Genome, bound: float = 10.0) -> None:
    """Raises ``ValueError`` unless ``g`` satisfies every invariant of the encoding."""
    n = g.n_nodes
    arrays_n = (g.node_id, g.node_act, g.node_layer)
    arrays_l = (g.link_id, g.link_src, g.link_dst, g.link_weight)
    if any(a.shape != (n,) for a in arrays_n) or any(a.shape != (g.n_links,) for a in arrays_l):
        raise ValueError("inconsistent array lengths")
    fixed = N_INPUTS + g.n_out
    if n < fixed or not np.array_equal(g.node_id[:fixed], np.arange(fixed)):
        raise ValueError("inputs/outputs must be nodes 0..3 / 4..4+C-1")
    if np.any(np.diff(g.node_id) <= 0):
        raise ValueError("node ids must be unique and ascending")
    if np.unique(g.link_id).size != g.n_links:
        raise ValueError("link ids must be unique")
    if np.any(g.node_act[:N_INPUTS] != NO_ACT) or np.any((g.node_act[N_INPUTS:] < 0) |
                                                           (g.node_act[N_INPUTS:] >= N_ACT)):
        raise ValueError("bad activation codes")
    s, d = g.link_src.astype(np.int64), g.link_dst.astype(np.int64)
    if np.any((s < 0) | (s >= n) | (d < 0) | (d >= n)):
        raise ValueError("link endpoint out of range")
    if np.any((s >= N_INPUTS) & (s < fixed)) or np.any(d < N_INPUTS):
        raise ValueError("links must leave inputs/hidden nodes and enter hidden/output nodes")
    if np.unique(s * n + d).size != g.n_links:
        raise ValueError("duplicate links")
    if not np.all(np.isfinite(g.link_weight)) or np.any(np.abs(g.link_weight) > bound):
        raise ValueError("weight out of bounds")
    layers = compute_layers(n, s, d)  # raises on a cycle
    if not np.array_equal(layers, g.node_layer):
        raise ValueError("stale node layers")
    if not outputs_connected(g.n_out, n, s, d):
        raise ValueError("an output is not reachable from the inputs")


# --- construction and mutation -------------------------------------------------------------

def random_genome(n_out: int, rng: np.random.Generator, counters: Counters, bound: float) -> Genome:
    """Every input linked to every output, no hidden node, uniform weights and activations.

    The initial links are the same structural innovation in every genome, so they get
    the same innovation ids ``0..4*C-1`` (as in NEAT); the link counter starts above them.
    """
    n = N_INPUTS + n_out
    src = np.repeat(np.arange(N_INPUTS), n_out)
    dst = np.tile(np.arange(N_INPUTS, n), N_INPUTS)
    weight = rng.uniform(-bound, bound, size=src.size)
    act = np.concatenate([np.full(N_INPUTS, NO_ACT), rng.integers(0, N_ACT, size=n_out)])
    counters.next_link = max(counters.next_link, src.size)
    counters.next_node = max(counters.next_node, n)
    gid = counters.next_genome
    counters.next_genome += 1
    return Genome(gid=gid, parent=-1, n_out=n_out, node_id=np.arange(n), node_act=act,
                  node_layer=compute_layers(n, src, dst), link_id=np.arange(src.size),
                  link_src=src, link_dst=dst, link_weight=weight)


def mutate_weights(weights: np.ndarray, rates: MutationRates, rng: np.random.Generator) -> np.ndarray:
    """Polynomial bounded mutation of a flat weight vector (the shared vectorised operator).

    Runs on the CPU in float64 with a torch generator seeded from ``rng``, then rounds
    back to float32 (unmutated weights come back bit-identical).
    """
    b = rates.weight_bound
    x = torch.from_numpy(np.asarray(weights, dtype=np.float64))
    gen = torch_generator(rng, torch.device("cpu"))
    out = polynomial_bounded(x, rates.eta, -b, b, rates.p_weight, gen).numpy()
    return np.clip(out.astype(np.float32), np.float32(-b), np.float32(b))


def mutate_some_weights(weights: np.ndarray, counts: np.ndarray, chosen: np.ndarray, p_weight: float,
                        eta: float, bound: float, rng: np.random.Generator) -> np.ndarray:
    """``weights`` (genome after genome, ``counts`` each) with, in every ``chosen`` genome, a
    Bernoulli(``p_weight``) choice of its weights, at least one (a uniformly drawn one where the
    draw chose none), moved by polynomial bounded mutation of ``eta``; the others unchanged.

    The sites and steps are NumPy draws; the step is ``mutate_weights``' torch float64 formula.
    """
    counts = np.asarray(counts, dtype=np.int64)
    chosen = np.asarray(chosen, dtype=bool) & (counts > 0)
    out = np.array(weights, dtype=np.float32, copy=True)
    if not chosen.any():
        return out
    genome_of = np.repeat(np.arange(counts.size), counts)
    where = np.flatnonzero(chosen[genome_of])  # the chosen genomes' weights, in order
    sites = where[rng.random(where.size) < p_weight]
    hits = np.bincount(genome_of[sites], minlength=counts.size)
    bare = np.flatnonzero(chosen & (hits == 0))
    starts = np.cumsum(counts) - counts
    one = starts[bare] + np.minimum((rng.random(bare.size) * counts[bare]).astype(np.int64), counts[bare] - 1)
    sites = np.sort(np.concatenate([sites, one]))
    x = torch.from_numpy(out[sites].astype(np.float64))
    u = torch.from_numpy(rng.random(sites.size))
    stepped = polynomial_step(x, u, eta, -bound, bound).numpy()
    out[sites] = np.clip(stepped.astype(np.float32), np.float32(-bound), np.float32(bound))
    return out


def into_outputs(genomes: list[Genome]) -> np.ndarray:
    """Per link of ``genomes`` (genome after genome, each in its link order), whether it
    feeds an output node: the image's last weighted sums, a smooth function of these weights."""
    if not genomes:
        return np.zeros(0, dtype=bool)
    return np.concatenate([(g.link_dst >= N_INPUTS) & (g.link_dst < N_INPUTS + g.n_out) for g in genomes])


def step_output_links(parents: list[Genome], chosen: np.ndarray, weights: np.ndarray, sigma: float,
                      bound: float, rng: np.random.Generator) -> np.ndarray:
    """``weights`` (the parents' links, genome after genome) with, in every ``chosen``
    genome, each link into an output node moved by a Gaussian step of ``sigma`` (clipped to
    ``±bound``); every other weight unchanged. One draw per moved link, in link order."""
    counts = np.array([p.n_links for p in parents], dtype=np.int64)
    sites = np.flatnonzero(into_outputs(parents) & np.repeat(np.asarray(chosen, dtype=bool), counts))
    out = np.array(weights, dtype=np.float32, copy=True)
    stepped = out[sites].astype(np.float64) + sigma * rng.standard_normal(sites.size)
    out[sites] = np.clip(stepped, -bound, bound).astype(np.float32)
    return out


class _Work:
    """Mutable working copy of one genome during structural mutation."""

    __slots__ = ("n_out", "node_id", "node_act", "link_id", "src", "dst", "w", "layer")

    def __init__(self, g: Genome, weight: np.ndarray, act: np.ndarray) -> None:
        self.n_out = g.n_out
        # The parent's layers while the graph is unchanged; None once a link or node changes.
        self.layer = g.node_layer
        self.node_id = g.node_id
        self.node_act = act
        self.link_id = g.link_id
        self.src = g.link_src.astype(np.int64)
        self.dst = g.link_dst.astype(np.int64)
        self.w = weight

    @property
    def n(self) -> int:
        return int(self.node_id.size)

    def add_link(self, rng: np.random.Generator, counters: Counters, bound: float) -> None:
        """Links a random (source, target) pair that is new and keeps the graph acyclic."""
        n, fixed = self.n, N_INPUTS + self.n_out
        reach = transitive_closure(n, self.src, self.dst)
        ok = ~reach.T  # src -> dst closes a cycle iff dst already reaches src
        np.fill_diagonal(ok, False)
        ok[N_INPUTS:fixed, :] = False  # outputs are sinks
        ok[:, :N_INPUTS] = False  # inputs are sources
        ok[self.src, self.dst] = False  # no duplicate link
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return
        pick = cand[rng.integers(cand.size)]
        self._append_links([pick // n], [pick % n], [rng.uniform(-bound, bound)], counters)

    def remove_link(self, rng: np.random.Generator) -> None:
        """Drops a random link, unless that disconnects an output from the inputs (then a no-op)."""
        if self.src.size == 0:
            return
        k = int(rng.integers(self.src.size))
        keep = np.arange(self.src.size) != k
        if outputs_connected(self.n_out, self.n, self.src[keep], self.dst[keep]):
            self._keep_links(keep)

    def add_node(self, rng: np.random.Generator, counters: Counters, bound: float) -> None:
        """Splits a random link s->d into s->new (old weight) and new->d (random weight)."""
        if self.src.size == 0:
            return
        k = int(rng.integers(self.src.size))
        s, d, w = int(self.src[k]), int(self.dst[k]), float(self.w[k])
        act = int(rng.integers(N_ACT))
        w_out = rng.uniform(-bound, bound)
        self._keep_links(np.arange(self.src.size) != k)
        new = self._append_node(act, counters)
        self._append_links([s, new], [new, d], [w, w_out], counters)

    def add_wave(self, rng: np.random.Generator, counters: Counters, bound: float, weight: float) -> None:
        """Adds a new sine node fed by x, y and the bias (a grating: any angle, frequency and
        phase) or by d and the bias (rings around the centre), half and half, and links it
        into one random output at a weight uniform in ±``weight``: the parent's image with
        one whole-image pattern added under that output's activation, as the direct
        encoding's ``waves`` and ``rings`` add one to pixels. The input weights are uniform
        in ±``bound``."""
        sources = [2, 3] if rng.random() < 0.5 else [0, 1, 3]  # d, bias or x, y, bias
        w_in = rng.uniform(-bound, bound, len(sources))
        output = N_INPUTS + int(rng.integers(self.n_out))
        w_out = rng.uniform(-weight, weight)
        new = self._append_node(ACTIVATIONS.index("sine"), counters)
        self._append_links([*sources, new], [new] * len(sources) + [output], [*w_in, w_out], counters)

    def remove_node(self, rng: np.random.Generator) -> None:
        """Deletes a random hidden node and its links, unless an output would be cut off."""
        fixed = N_INPUTS + self.n_out
        n_hidden = self.n - fixed
        if n_hidden == 0:
            return
        v = fixed + int(rng.integers(n_hidden))
        keep = (self.src != v) & (self.dst != v)
        if not outputs_connected(self.n_out, self.n, self.src[keep], self.dst[keep]):
            return
        self._keep_links(keep)
        self.node_id = np.delete(self.node_id, v)
        self.node_act = np.delete(self.node_act, v)
        # Positions above v shift down by one.
        self.src = self.src - (self.src > v)
        self.dst = self.dst - (self.dst > v)

    def _append_node(self, act: int, counters: Counters) -> int:
        """Appends a hidden node with activation ``act`` and a new id; returns its position
        (the last: ids only grow, so node ids stay ascending)."""
        self.node_id = np.concatenate((self.node_id, [counters.next_node]))
        self.node_act = np.concatenate((self.node_act, np.array([act], dtype=self.node_act.dtype)))
        counters.next_node += 1
        return self.n - 1

    def _append_links(self, src: list[int], dst: list[int], w: list[float], counters: Counters) -> None:
        """Appends links ``src[i] -> dst[i]`` with new innovation ids, in order (one
        concatenation per array: ``np.append`` per link was most of a mutation's cost)."""
        first = counters.next_link
        counters.next_link += len(src)
        self.link_id = np.concatenate((self.link_id, np.arange(first, first + len(src))))
        self.src = np.concatenate((self.src, src))
        self.dst = np.concatenate((self.dst, dst))
        self.w = np.concatenate((self.w, np.array(w, dtype=np.float32)))
        self.layer = None

    def _keep_links(self, keep: np.ndarray) -> None:
        self.link_id, self.src, self.dst, self.w = (
            self.link_id[keep], self.src[keep], self.dst[keep], self.w[keep])
        self.layer = None

    def freeze(self, gid: int, parent: int) -> Genome:
        layer = compute_layers(self.n, self.src, self.dst) if self.layer is None else self.layer
        return Genome(gid=gid, parent=parent, n_out=self.n_out, node_id=self.node_id,
                      node_act=self.node_act, node_layer=layer,
                      link_id=self.link_id, link_src=self.src, link_dst=self.dst, link_weight=self.w)


def mutate_structure(parent: Genome, weight: np.ndarray, act: np.ndarray, rng: np.random.Generator,
                     counters: Counters, rates: MutationRates) -> Genome:
    """The child of ``parent`` with already-mutated ``weight``/``act`` and structural mutations.

    Each structural operator fires with its own probability, in the original's order:
    add link, remove link, add node (split a link), remove hidden node; then, with
    ``rates.p_add_wave`` > 0, add a wave (drawn only then: runs without it keep their stream).
    """
    work = _Work(parent, weight, act)
    fire = rng.random(4) < np.array([rates.p_add_link, rates.p_remove_link,
                                      rates.p_add_node, rates.p_remove_node])
    if fire[0]:
        work.add_link(rng, counters, rates.weight_bound)
    if fire[1]:
        work.remove_link(rng)
    if fire[2]:
        work.add_node(rng, counters, rates.weight_bound)
    if fire[3]:
        work.remove_node(rng)
    if rates.p_add_wave > 0 and rng.random() < rates.p_add_wave:
        work.add_wave(rng, counters, rates.weight_bound, rates.wave_weight)
    gid = counters.next_genome
    counters.next_genome += 1
    return work.freeze(gid, parent.gid)


def mutate_batch(parents: list[Genome], rng: np.random.Generator, counters: Counters,
                 rates: MutationRates, eligible: np.ndarray | None = None) -> list[Genome]:
    """One child per parent: weights and activations vectorised over the whole batch,
    then per-genome structural mutation.

    With ``rates.p_weights_only`` > 0 a share of the children (drawn first, ``rng.random(n)``)
    keep their parent's graph and activations and change only the weights the polynomial
    mutation chose; one whose weights all came out unchanged mutates as the others do (a
    copy of its parent would waste its evaluation). With 0 nothing is drawn for it: runs
    recorded before the parameter keep their random stream. ``rates.weights_only_p_weight``
    (> 0) gives those children their own sparser mutation (``mutate_some_weights``).
    """
    if not parents:
        return []
    n = len(parents)
    light = (rng.random(n) < rates.p_weights_only) if rates.p_weights_only > 0 else np.zeros(n, dtype=bool)
    if eligible is not None:
        light &= np.asarray(eligible, dtype=bool)
    n_links = np.array([p.n_links for p in parents])
    n_act = np.array([p.n_nodes - N_INPUTS for p in parents])
    before = np.concatenate([p.link_weight for p in parents])
    weights = mutate_weights(before, rates, rng)
    # Which weights-only children step their output links instead: drawn only for a share
    # strictly between 0 and 1, so runs recorded before it (0) resume exactly.
    output = np.zeros(n, dtype=bool)
    if rates.weights_only_output >= 1:
        output = light.copy()
    elif rates.weights_only_output > 0 and light.any():
        output = light & (rng.random(n) < rates.weights_only_output)
    polynomial = light & ~output
    if rates.weights_only_p_weight > 0 and polynomial.any():
        # The weights-only children start again from their parents' weights with their own
        # rates; nothing is drawn for this without them (recorded runs resume exactly).
        fine = mutate_some_weights(before, n_links, polynomial, rates.weights_only_p_weight,
                                   rates.weights_only_eta or rates.eta, rates.weight_bound, rng)
        weights = np.where(np.repeat(polynomial, n_links), fine, weights)
    if output.any():
        fine = step_output_links(parents, output, before, rates.weights_only_sigma, rates.weight_bound, rng)
        weights = np.where(np.repeat(output, n_links), fine, weights)
    acts = np.concatenate([p.node_act[N_INPUTS:] for p in parents])
    redraw = rng.random(acts.size) < rates.p_activation
    acts = np.where(redraw, rng.integers(0, N_ACT, size=acts.size), acts).astype(np.int8)
    w_split = np.split(weights, np.cumsum(n_links)[:-1])
    a_split = np.split(acts, np.cumsum(n_act)[:-1])
    head = np.full(N_INPUTS, NO_ACT, dtype=np.int8)
    children = []
    for p, w, a, only_weights in zip(parents, w_split, a_split, light):
        if only_weights and not np.array_equal(w, p.link_weight):
            children.append(replace(p, gid=counters.next_genome, parent=p.gid, link_weight=w))
            counters.next_genome += 1
        else:
            children.append(mutate_structure(p, w, np.concatenate([head, a]), rng, counters, rates))
    return children


CROSSOVERS = ("uniform", "line")  # how a crossed parent takes its mate's matching genes


def cross_batch(parents: list[Genome], rate: float, kind: str, rng: np.random.Generator,
                bound: float, sigma: float = 1.0) -> list[Genome]:
    """A new list of ``parents`` where a ``rate`` share of them are crossed with another
    parent of the batch (its mate, drawn uniformly), before mutation.

    A crossed parent keeps its own graph (NEAT: disjoint and excess genes come from one
    parent) and changes only the genes it shares with its mate, the links with the same
    innovation id (both inherited from one ancestor):

    * ``uniform``: each shared link takes the mate's weight with probability 1/2, and each
      shared hidden or output node (same node id) the mate's activation (NEAT's crossover);
    * ``line``: every shared link moves along the line to the mate's weight,
      ``w + t·(w_mate - w)`` with one ``t ~ N(0, sigma²)`` per child (the directional
      variation of Vassiliades & Mouret 2018: champions lie in a correlated subspace),
      clipped to ``±bound``.

    Draws ``rng.random(n)`` and ``rng.integers`` for the choice and the mates, then per
    crossed parent, in batch order, its own draws. The genome ids stay the parents' (the
    mutation that follows gives the child its id and records the parent).
    """
    n = len(parents)
    if rate <= 0 or n < 2:
        return list(parents)
    if kind not in CROSSOVERS:
        raise ValueError(f"crossover must be one of {', '.join(CROSSOVERS)}, not {kind!r}")
    crossed = rng.random(n) < rate
    mates = rng.integers(0, n - 1, size=n)
    mates += mates >= np.arange(n)  # another place of the batch (it may hold the same champion)
    out = list(parents)
    for i in np.flatnonzero(crossed):
        p, m = parents[i], parents[int(mates[i])]
        _, mine, theirs = np.intersect1d(p.link_id, m.link_id, assume_unique=True, return_indices=True)
        weight = p.link_weight.copy()
        act = p.node_act
        if kind == "uniform":
            take = rng.random(mine.size) < 0.5
            weight[mine[take]] = m.link_weight[theirs[take]]
            _, own_nodes, mate_nodes = np.intersect1d(p.node_id[N_INPUTS:], m.node_id[N_INPUTS:],
                                                      assume_unique=True, return_indices=True)
            take_act = rng.random(own_nodes.size) < 0.5
            act = act.copy()
            act[N_INPUTS + own_nodes[take_act]] = m.node_act[N_INPUTS + mate_nodes[take_act]]
        else:
            t = rng.normal(0.0, sigma)
            shared = weight[mine].astype(np.float64)
            moved = shared + t * (m.link_weight[theirs].astype(np.float64) - shared)
            weight[mine] = np.clip(moved, -bound, bound)
        out[i] = replace(p, link_weight=weight, node_act=act)
    return out


def with_weights(parents: list[Genome], weights: np.ndarray, counters: Counters, bound: float) -> list[Genome]:
    """One child per parent with the same graph and activations and its links' weights
    taken from ``weights`` (all children's, concatenated in order), clipped to ``±bound``."""
    n_links = np.array([p.n_links for p in parents], dtype=np.int64)
    weights = np.asarray(weights)
    if weights.shape != (int(n_links.sum()),):
        raise ValueError(f"{weights.shape} weights for parents with {int(n_links.sum())} links")
    moved = np.clip(weights, -bound, bound).astype(np.float32)
    children = []
    for p, w in zip(parents, np.split(moved, np.cumsum(n_links)[:-1])):
        children.append(replace(p, gid=counters.next_genome, parent=p.gid, link_weight=w))
        counters.next_genome += 1
    return children


def densify_outputs(g: Genome, counters: Counters) -> Genome:
    """``g`` with a link at weight 0 from every input and hidden node into every output node
    it does not already link to (new innovation ids, in (output, source) order): the same
    image, and every node value a term of each output's weighted sum. Outputs are sinks, so
    no link can close a cycle; the layers are recomputed (an output may sit deeper)."""
    first_out, stop_out = N_INPUTS, N_INPUTS + g.n_out
    sources = np.concatenate([np.arange(N_INPUTS), np.arange(stop_out, g.n_nodes)])
    dst = np.repeat(np.arange(first_out, stop_out), sources.size)
    src = np.tile(sources, g.n_out)
    have = np.zeros((g.n_nodes, g.n_nodes), dtype=bool)
    have[g.link_src, g.link_dst] = True
    new = ~have[src, dst]
    src, dst = src[new], dst[new]
    if not src.size:
        return g
    first = counters.next_link
    counters.next_link += int(src.size)
    link_src = np.concatenate([g.link_src, src.astype(np.int32)])
    link_dst = np.concatenate([g.link_dst, dst.astype(np.int32)])
    return replace(g, link_id=np.concatenate([g.link_id, np.arange(first, first + src.size)]),
                   link_src=link_src, link_dst=link_dst,
                   link_weight=np.concatenate([g.link_weight, np.zeros(src.size, np.float32)]),
                   node_layer=compute_layers(g.n_nodes, link_src.astype(np.int64), link_dst.astype(np.int64)))


def step_weights(parents: list[Genome], sigmas: np.ndarray, rng: np.random.Generator, counters: Counters,
                 bound: float) -> list[Genome]:
    """One child per parent with the same graph and activations: every link weight moved by
    a Gaussian step of the parent's ``sigma`` (clipped to ``±bound``), in one draw for the
    whole batch. The local search of evolution strategies, where ``mutate_batch`` also
    changes structure and activations."""
    if not parents:
        return []
    n_links = np.array([p.n_links for p in parents])
    weights = np.concatenate([p.link_weight for p in parents]).astype(np.float64)
    steps = rng.standard_normal(weights.size) * np.repeat(np.asarray(sigmas, dtype=np.float64), n_links)
    return with_weights(parents, weights + steps, counters, bound)
