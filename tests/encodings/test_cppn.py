"""The cppn encoding's interface: initial genomes, determinism, state, store and saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evofool.encodings import make_encoding
from evofool.encodings.cppn import CPPNEncoding
from evofool.encodings.cppn_genome import N_INPUTS, check_genome, cross_batch
from evofool.errors import EvofoolError


def evolve(enc: CPPNEncoding, rng: np.random.Generator, pop: list, generations: int) -> list:
    """A toy steady loop: random parents from ``pop`` each generation (all randomness from rng)."""
    for gen in range(generations):
        pop = enc.vary(enc.take(pop, rng.integers(0, len(pop), size=len(pop))), rng, gen)
    return pop


def packed_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_initial_genomes_follow_the_paper():
    enc = CPPNEncoding((3, 8, 8))
    pop = enc.random(300, np.random.default_rng(0))
    for g in pop:
        check_genome(g)
        assert g.n_hidden == 0 and g.n_links == 4 * 3 and g.parent == -1
        assert set(zip(g.link_src.tolist(), g.link_dst.tolist())) == {(i, o) for i in range(4) for o in range(4, 7)}
    w = np.concatenate([g.link_weight for g in pop])
    assert w.min() >= -10 and w.max() <= 10 and w.min() < -9.5 and w.max() > 9.5
    acts = np.concatenate([g.node_act[N_INPUTS:] for g in pop])
    assert set(np.unique(acts).tolist()) == {0, 1, 2, 3}  # random output activations
    assert len({g.gid for g in pop}) == 300


def test_same_seed_same_genomes_and_images():
    def run(seed: int):
        enc = CPPNEncoding((3, 12, 12))
        rng = np.random.default_rng(seed)
        pop = evolve(enc, rng, enc.random(30, rng), 15)
        store = enc.put(enc.empty_store(30), np.arange(30), pop, np.arange(30))
        return enc.pack(store, np.arange(30)), enc.render(pop), enc.state_dict()

    a, b, c = run(4), run(4), run(5)
    assert packed_equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not packed_equal(a[0], c[0])


@pytest.mark.parametrize("params", [{}, {"crossover_rate": 0.5}, {"crossover_rate": 0.5, "crossover": "line"}])
def test_resume_from_state_dict_rng_state_and_packed_store_is_bit_identical(params):
    shape, k = (1, 10, 10), 12
    enc = CPPNEncoding(shape, **params)
    rng = np.random.default_rng(9)
    pop = evolve(enc, rng, enc.random(k, rng), 10)
    store = enc.put(enc.empty_store(k), np.arange(k), pop, np.arange(k))
    # Checkpoint: JSON state, rng state, packed arrays.
    state = json.loads(json.dumps(enc.state_dict()))
    rng_state = json.loads(json.dumps(rng.bit_generator.state))
    packed = {name: arr.copy() for name, arr in enc.pack(store, np.arange(k)).items()}

    straight = evolve(enc, rng, store, 10)

    enc2 = CPPNEncoding(shape, **params)
    enc2.load_state_dict(state)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    resumed = evolve(enc2, rng2, enc2.unpack(packed, np.arange(k), k), 10)

    full = np.arange(k)
    assert packed_equal(enc.pack(straight, full), enc2.pack(resumed, full))
    assert torch.equal(enc.render(straight), enc2.render(resumed))
    assert enc.state_dict() == enc2.state_dict()


def test_pack_unpack_round_trip_with_empty_slots():
    enc = CPPNEncoding((3, 8, 8))
    rng = np.random.default_rng(2)
    pop = evolve(enc, rng, enc.random(10, rng), 20)
    store = enc.put(enc.empty_store(16), np.array([0, 3, 7, 15]), pop, np.array([2, 5, 5, 9]))
    slots = np.array([0, 3, 7, 15])
    packed = enc.pack(store, slots)
    assert packed["link_weight"].dtype == np.float32 and packed["node_offsets"].dtype == np.int64
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in packed.values())
    back = enc.unpack(packed, slots, 16)
    assert [s is None for s in back] == [s is None for s in store]
    for s in slots:
        a, b = store[s], back[s]
        assert a.gid == b.gid and a.parent == b.parent
        for name in ("node_id", "node_act", "node_layer", "link_id", "link_src", "link_dst"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, "link_weight").tobytes() == getattr(b, "link_weight").tobytes()  # bit-identical
    assert packed_equal(packed, enc.pack(back, slots))
    assert torch.equal(enc.render([store[s] for s in slots]), enc.render([back[s] for s in slots]))


def test_pack_rejects_empty_slots_and_unpack_rejects_broken_genomes():
    enc = CPPNEncoding((1, 8, 8))
    store = enc.put(enc.empty_store(3), np.array([1]), enc.random(1, np.random.default_rng(0)), np.array([0]))
    with pytest.raises(ValueError):
        enc.pack(store, np.array([0]))
    packed = enc.pack(store, np.array([1]))
    cyclic = {**packed, "link_src": packed["link_src"].copy()}
    cyclic["link_src"][0] = 4  # out of an output: not allowed
    with pytest.raises(ValueError):
        enc.unpack(cyclic, np.array([1]), 3)
    with pytest.raises(ValueError):
        enc.unpack(packed, np.array([0, 1]), 3)


def test_take_and_put_share_genomes_without_copying():
    enc = CPPNEncoding((1, 8, 8))
    pop = enc.random(4, np.random.default_rng(0))
    sub = enc.take(pop, np.array([3, 3, 0]))
    assert sub[0] is pop[3] and sub[1] is pop[3] and sub[2] is pop[0]
    store = enc.put(enc.empty_store(5), np.array([4, 0]), pop, np.array([1, 2]))
    assert store[4] is pop[1] and store[0] is pop[2] and store[1] is None
    with pytest.raises((ValueError, TypeError)):  # frozen: archive slots may share it safely
        pop[0].link_weight[0] = 1.0


def test_config_state_and_parameter_checks():
    enc = make_encoding("cppn", (3, 32, 32), p_add_node=0.25, eta=20)
    cfg = enc.config()
    json.dumps(cfg)
    assert cfg["p_add_node"] == 0.25 and cfg["eta"] == 20 and cfg["colour_space"] == "hsv"
    assert cfg["p_weight"] == 0.1 and cfg["p_remove_link"] == 0.3 and cfg["p_remove_node"] == 0.2
    assert set(enc.state_dict()) == {"next_genome_id", "next_node_id", "next_link_id"}
    with pytest.raises(ValueError):
        CPPNEncoding((2, 8, 8))
    with pytest.raises(EvofoolError, match=r"p_add_link must be a finite number in \[0, 1\]"):
        CPPNEncoding((1, 8, 8), p_add_link=1.5)
    with pytest.raises(EvofoolError, match="render_dtype must be one of float64, float32"):
        CPPNEncoding((1, 8, 8), render_dtype="float16")
    with pytest.raises(EvofoolError, match="unknown parameter 'p_add_nodes' for encoding cppn; valid: p_weight=0.1"):
        make_encoding("cppn", (1, 28, 28), p_add_nodes=0.1)


def test_refine_graphs_links_every_node_into_every_output_only_when_dense():
    """refine_links=dense: each genome gains a link at weight 0 from every input and hidden
    node into every output it lacks (new innovation ids from the run's counter, the same
    graph otherwise), so its image is bit for bit the same; a dense genome gains nothing;
    output and all return the genomes as they are."""
    rng = np.random.default_rng(2)
    for links in ("output", "all"):
        enc = CPPNEncoding((3, 16, 16), refine_links=links)
        pop = evolve(enc, rng, enc.random(6, rng), 3)
        assert all(a is b for a, b in zip(enc.refine_graphs(pop), pop))
    enc = CPPNEncoding((3, 16, 16), refine_links="dense")
    pop = evolve(enc, rng, enc.random(12, rng), 4)
    first_new = enc.counters.next_link
    dense = enc.refine_graphs(pop)
    assert enc.counters.next_link > first_new
    for p, d in zip(pop, dense):
        check_genome(d, enc.weight_bound)
        into = (d.link_dst >= N_INPUTS) & (d.link_dst < N_INPUTS + 3)
        sources = set(range(N_INPUTS)) | set(range(N_INPUTS + 3, d.n_nodes))
        for out in range(N_INPUTS, N_INPUTS + 3):
            assert set(d.link_src[into & (d.link_dst == out)].tolist()) == sources
        assert np.array_equal(d.link_id[:p.n_links], p.link_id) and (d.link_id[p.n_links:] >= first_new).all()
        assert (d.link_weight[p.n_links:] == 0).all() and d.gid == p.gid and d.n_nodes == p.n_nodes
    assert torch.equal(enc.render(dense), enc.render(pop))
    assert np.array_equal(enc.refine_mask(dense), np.concatenate(
        [(d.link_dst >= N_INPUTS) & (d.link_dst < N_INPUTS + 3) for d in dense]))
    counter = enc.counters.next_link
    assert [g.n_links for g in enc.refine_graphs(dense)] == [g.n_links for g in dense]
    assert enc.counters.next_link == counter


def test_crossover_off_draws_nothing_and_keeps_the_mutation_stream():
    """crossover_rate 0 (the default) consumes no random numbers, so a run recorded before
    crossover existed makes the same children; any rate > 0 changes them."""
    def children(**params):
        enc = CPPNEncoding((3, 12, 12), **params)
        rng = np.random.default_rng(5)
        pop = evolve(enc, rng, enc.random(16, rng), 6)
        return enc.pack(pop, np.arange(16)), rng.random()

    plain, after = children()
    off, after_off = children(crossover_rate=0.0, crossover="line")
    on, _ = children(crossover_rate=0.5)
    assert packed_equal(plain, off) and after == after_off
    assert not packed_equal(plain, on)


@pytest.mark.parametrize("kind", ["uniform", "line"])
def test_crossed_parents_keep_their_graph_and_change_only_genes_shared_with_their_mate(kind):
    rng = np.random.default_rng(3)
    enc = CPPNEncoding((3, 16, 16), p_add_node=0.8, p_add_link=0.8)
    # Two lineages of one ancestor each: shared initial links, and their own later genes.
    a = evolve(enc, rng, enc.random(1, rng) * 6, 5)
    b = evolve(enc, rng, enc.random(1, rng) * 6, 5)
    parents = a + b
    crossed = cross_batch(parents, 1.0, kind, np.random.default_rng(0), enc.weight_bound, 0.5)
    assert len(crossed) == len(parents)
    changed = 0
    for p, c in zip(parents, crossed):
        check_genome(c, enc.weight_bound)
        assert c.gid == p.gid and c.parent == p.parent
        for name in ("node_id", "node_layer", "link_id", "link_src", "link_dst"):
            assert np.array_equal(getattr(c, name), getattr(p, name))
        # Only links and nodes some other parent also has can change; under uniform each
        # changed weight is a batch mate's, under line no activation changes.
        others = [q for q in parents if q is not p]
        shared = np.isin(p.link_id, np.concatenate([q.link_id for q in others]))
        moved = c.link_weight != p.link_weight
        assert not (moved & ~shared).any()
        if kind == "uniform":
            for i in np.flatnonzero(moved):
                assert any(c.link_weight[i] in q.link_weight[q.link_id == p.link_id[i]] for q in others)
            node_shared = np.isin(p.node_id, np.concatenate([q.node_id[N_INPUTS:] for q in others]))
            assert not ((c.node_act != p.node_act) & ~node_shared).any()
        else:
            assert np.array_equal(c.node_act, p.node_act)
        changed += int(moved.any())
    assert changed >= len(parents) // 2


def test_crossover_is_reproducible_and_checks_its_kind():
    rng = np.random.default_rng(8)
    enc = CPPNEncoding((1, 8, 8))
    pop = evolve(enc, rng, enc.random(10, rng), 4)
    first = cross_batch(pop, 0.5, "line", np.random.default_rng(1), 10.0)
    second = cross_batch(pop, 0.5, "line", np.random.default_rng(1), 10.0)
    assert all(np.array_equal(x.link_weight, y.link_weight) for x, y in zip(first, second))
    assert all(a is b for a, b in zip(cross_batch(pop[:1], 1.0, "uniform", rng, 10.0), pop[:1]))
    with pytest.raises(ValueError, match="crossover must be one of uniform, line"):
        cross_batch(pop, 0.5, "blend", rng, 10.0)
    with pytest.raises(EvofoolError, match="crossover must be one of uniform, line"):
        CPPNEncoding((1, 8, 8), crossover="blend")
    with pytest.raises(EvofoolError, match=r"crossover_rate must be a finite number in \[0, 1\]"):
        CPPNEncoding((1, 8, 8), crossover_rate=2)
