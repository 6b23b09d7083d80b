"""CPPN mutation: invariants over thousands of mutations, and each operator on its own."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evofool.encodings.cppn import CPPNEncoding
from genome_helpers import same_graph
from evofool.encodings.cppn_genome import (
    N_INPUTS,
    check_genome,
    compute_layers,
    outputs_connected,
    transitive_closure,
)

ONLY = dict(p_weight=0.0, p_activation=0.0, p_add_link=0.0, p_remove_link=0.0, p_add_node=0.0, p_remove_node=0.0,
            p_weights_only=0.0, p_add_wave=0.0)
BOLD = dict(p_add_node=0.8, p_add_link=0.8, p_remove_node=0.3, p_remove_link=0.5, p_activation=0.3)


def assert_acyclic(g) -> None:
    reach = transitive_closure(g.n_nodes, g.link_src.astype(np.int64), g.link_dst.astype(np.int64))
    assert not reach.diagonal().any()
    assert np.all(g.node_layer[g.link_src] < g.node_layer[g.link_dst])


def test_invariants_hold_over_thousands_of_mutations():
    enc = CPPNEncoding((3, 8, 8))
    rng = np.random.default_rng(0)
    pop = enc.random(60, rng)
    seen_ids, n_mutations, grew, shrank = set(), 0, 0, 0
    for gen in range(60):  # 3600 mutations; parents picked at random, as in MAP-Elites
        parents = enc.take(pop, rng.integers(0, len(pop), size=len(pop)))
        children = enc.vary(parents, rng, gen)
        for parent, child in zip(parents, children):
            check_genome(child)  # acyclic, outputs reachable, unique ids, weights in bounds...
            assert_acyclic(child)
            assert child.parent == parent.gid and child.gid not in seen_ids
            assert np.all(np.abs(child.link_weight) <= 10.0)
            seen_ids.add(child.gid)
            grew += child.n_hidden > parent.n_hidden
            shrank += child.n_hidden < parent.n_hidden
        n_mutations += len(children)
        pop = children
    assert n_mutations == 3600 and grew > 100 and shrank > 20
    assert max(g.n_hidden for g in pop) >= 5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       rates=st.fixed_dictionaries({k: st.sampled_from([0.0, 0.3, 1.0]) for k in ONLY}),
       channels=st.sampled_from([1, 3]))
def test_invariants_hold_for_any_rates(seed, rates, channels):
    enc = CPPNEncoding((channels, 4, 4), **rates)
    rng = np.random.default_rng(seed)
    pop = enc.random(6, rng)
    for gen in range(20):
        pop = enc.vary(pop, rng, gen)
        for g in pop:
            check_genome(g)
    node_ids = np.concatenate([g.node_id[N_INPUTS + channels:] for g in pop])
    assert node_ids.size == 0 or node_ids.min() >= N_INPUTS + channels


def test_add_node_splits_a_link():
    enc = CPPNEncoding((1, 4, 4), **{**ONLY, "p_add_node": 1.0})
    rng = np.random.default_rng(1)
    (parent,) = enc.random(1, rng)
    (child,) = enc.vary([parent], rng, 0)
    assert child.n_hidden == 1 and child.n_links == parent.n_links + 1
    new = child.n_nodes - 1
    into, out_of = child.link_dst == new, child.link_src == new
    assert into.sum() == 1 and out_of.sum() == 1
    # The split link's weight is kept on the way in; the ids are fresh.
    assert child.link_weight[into][0] in set(parent.link_weight.tolist())
    assert child.node_id[new] == enc.state_dict()["next_node_id"] - 1
    assert child.node_layer[new] == 1 and child.node_layer[N_INPUTS] == 2


def test_removing_the_last_path_into_an_output_is_refused():
    enc = CPPNEncoding((1, 4, 4), **{**ONLY, "p_remove_link": 1.0})
    rng = np.random.default_rng(2)
    g = enc.random(1, rng)[0]
    for gen in range(20):  # 4 links into the output: the last one can never go
        g = enc.vary([g], rng, gen)[0]
        assert g.n_links >= 1 and outputs_connected(1, g.n_nodes, g.link_src, g.link_dst)
    assert g.n_links == 1


def test_removing_a_hidden_node_keeps_outputs_connected():
    grow = CPPNEncoding((1, 4, 4), **{**ONLY, "p_add_node": 1.0})
    rng = np.random.default_rng(3)
    g = grow.random(1, rng)[0]
    for gen in range(6):
        g = grow.vary([g], rng, gen)[0]
    prune = CPPNEncoding((1, 4, 4), **{**ONLY, "p_remove_node": 1.0})
    prune.load_state_dict(grow.state_dict())
    sizes = [g.n_hidden]
    for gen in range(30):
        g = prune.vary([g], rng, gen)[0]
        check_genome(g)
        sizes.append(g.n_hidden)
    assert sizes[0] == 6 and min(sizes) < 6 and all(b <= a for a, b in zip(sizes, sizes[1:]))


def test_add_link_never_closes_a_cycle_even_when_forced():
    enc = CPPNEncoding((1, 4, 4), **{**ONLY, "p_add_link": 1.0, "p_add_node": 1.0})
    rng = np.random.default_rng(4)
    g = enc.random(1, rng)[0]
    for gen in range(40):
        g = enc.vary([g], rng, gen)[0]
        assert_acyclic(g)
    # 40 splits (+1 link each) and nearly every forced add_link found a legal pair.
    assert g.n_hidden == 40 and g.n_links >= 4 + 40 + 35


def test_weight_and_activation_mutation_rates():
    enc = CPPNEncoding((3, 4, 4), **{**ONLY, "p_weight": 0.1, "p_activation": 0.1})
    rng = np.random.default_rng(5)
    parents = enc.random(500, rng)
    children = enc.vary(parents, rng, 0)
    w0 = np.concatenate([p.link_weight for p in parents])
    w1 = np.concatenate([c.link_weight for c in children])
    assert 0.08 < np.mean(w0 != w1) < 0.12
    a0 = np.concatenate([p.node_act[N_INPUTS:] for p in parents])
    a1 = np.concatenate([c.node_act[N_INPUTS:] for c in children])
    assert 0.06 < np.mean(a0 != a1) < 0.09  # redrawn w.p. 0.1, same code again 1 time in 4
    assert all(np.array_equal(p.node_id, c.node_id) for p, c in zip(parents, children))


def test_weights_only_children_keep_graph_and_activations_and_are_never_copies():
    """p_weights_only=1 under bold structural rates: a child keeps its parent's graph and
    activations and differs in a weight; one whose weights all came out unchanged (p_weight
    0.1 of 12 links: about 28 % of fresh genomes) mutates as usual instead of wasting an
    evaluation on a copy."""
    enc = CPPNEncoding((3, 8, 8), p_weights_only=1.0, **BOLD)
    rng = np.random.default_rng(3)
    parents = enc.random(400, rng)
    children = enc.vary(parents, rng, 0)
    light = [same_graph(p, c) for p, c in zip(parents, children)]
    copies = [kept and np.array_equal(p.link_weight, c.link_weight) for p, c, kept in zip(parents, children, light)]
    for p, c in zip(parents, children):
        check_genome(c)
        assert c.parent == p.gid
    assert 0.62 < np.mean(light) < 0.82
    # Only a child that mutated as usual can equal its parent (no structural operator fired or
    # took, no activation redrawn), as without the parameter: about one in a hundred here.
    assert np.mean(copies) < 0.03
    # A share: about half the children keep their graph, the rest mutate as before.
    half = CPPNEncoding((3, 8, 8), p_weights_only=0.5, **BOLD)
    children = half.vary(parents, np.random.default_rng(4), 0)
    assert 0.28 < np.mean([same_graph(p, c) for p, c in zip(parents, children)]) < 0.46


def test_add_wave_adds_one_sine_node_from_x_y_or_d_into_one_output_at_a_small_weight():
    """The direct encoding's gratings and rings as a CPPN operator: the parent's graph, links
    and weights are all kept, and one new sine node (fed by x, y and the bias, or by d and the
    bias) adds its pattern into one output at a weight within ±wave_weight."""
    enc = CPPNEncoding((3, 32, 32), **{**ONLY, "p_add_wave": 1.0, "wave_weight": 0.3})
    rng = np.random.default_rng(4)
    parents = enc.random(200, rng)
    children = enc.vary(parents, rng, 0)
    feeds = set()
    for parent, child in zip(parents, children):
        check_genome(child)
        new = child.n_nodes - 1
        assert child.n_hidden == parent.n_hidden + 1 and child.node_act[new] == 0  # sine
        assert np.array_equal(child.link_id[:parent.n_links], parent.link_id)
        assert np.array_equal(child.link_weight[:parent.n_links], parent.link_weight)
        into, out_of = child.link_dst == new, child.link_src == new
        feeds.add(tuple(sorted(child.link_src[into].tolist())))
        assert out_of.sum() == 1 and N_INPUTS <= child.link_dst[out_of][0] < N_INPUTS + 3
        assert abs(child.link_weight[out_of][0]) <= 0.3
        assert np.all(np.abs(child.link_weight[into]) <= 10.0)
    assert feeds == {(0, 1, 3), (2, 3)}  # gratings and rings
    before, after = enc.render(parents), enc.render(children)
    # Most images change (78 % of these): where the output is saturated (or is a hue at zero
    # saturation or value) a small added pattern does not show.
    assert (before != after).any((1, 2, 3)).float().mean() > 0.6


def test_no_weights_only_share_draws_nothing_for_it():
    """p_weights_only=0 (the default) draws no number for it: the children and the random
    stream are those of the rates without the parameter, so recorded runs resume exactly."""
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    with_param = CPPNEncoding((3, 8, 8), p_weights_only=0.0, **BOLD)
    without = CPPNEncoding((3, 8, 8), **BOLD)
    a = with_param.vary(with_param.random(50, rng_a), rng_a, 0)
    b = without.vary(without.random(50, rng_b), rng_b, 0)
    assert all(same_graph(x, y) and np.array_equal(x.link_weight, y.link_weight) for x, y in zip(a, b))
    assert rng_a.random() == rng_b.random()
    light = CPPNEncoding((3, 8, 8), p_weights_only=0.3, **BOLD)
    rng_c = np.random.default_rng(9)
    light.vary(light.random(50, rng_c), rng_c, 0)
    assert rng_c.random() != np.random.default_rng(9).random()  # a positive share does draw


def test_weights_only_children_with_their_own_sparse_rate_move_at_least_one_weight():
    """weights_only_p_weight: the weights-only children move a Bernoulli share of their
    parents' weights, never none (so none falls back to a structural mutation), while the
    other children keep p_weight's; weights_only_eta sets how far those weights move."""
    rng = np.random.default_rng(5)
    parents = CPPNEncoding((3, 8, 8)).random(300, rng)
    links = np.array([p.n_links for p in parents])

    def vary(**params):
        enc = CPPNEncoding((3, 8, 8), p_weights_only=1.0, **BOLD, **params)
        children = enc.vary(parents, np.random.default_rng(6), 0)
        kept = np.array([same_graph(p, c) for p, c in zip(parents, children)])
        pairs = [(p.link_weight, c.link_weight) for p, c, k in zip(parents, children, kept) if k]
        moved = np.array([np.sum(w != v) for w, v in pairs])
        steps = np.concatenate([np.abs(v - w)[v != w] for w, v in pairs])
        return moved, kept, steps

    moved, kept, _ = vary()
    assert not kept.all()  # p_weight 0.1 of ~12 links leaves some children unchanged: they mutate as usual
    moved, kept, steps = vary(weights_only_p_weight=0.02)
    assert kept.all() and (moved >= 1).all()
    expected = np.mean((1 - 0.02) ** links + 0.02 * links)  # the forced one where none was drawn, + Bernoulli
    assert abs(moved.mean() - expected) < 0.1 and moved.max() <= 4
    moved_dense, kept, _ = vary(weights_only_p_weight=0.5)
    assert kept.all() and 0.4 * links.mean() < moved_dense.mean() < 0.6 * links.mean()
    _, _, fine_steps = vary(weights_only_p_weight=0.02, weights_only_eta=400.0)
    assert np.median(fine_steps) < 0.5 * np.median(steps)  # eta 400 against eta 40: smaller moves


def test_weights_only_rates_unset_draw_nothing_for_them():
    """weights_only_p_weight 0 (the default) is the behaviour and random stream of runs
    recorded before it; a value draws (and changes the children)."""
    def vary(**params):
        enc = CPPNEncoding((3, 8, 8), p_weights_only=0.5, **BOLD, **params)
        rng = np.random.default_rng(9)
        children = enc.vary(enc.random(60, rng), rng, 0)
        return children, rng.random()

    (a, ra), (b, rb) = vary(), vary(weights_only_p_weight=0.0, weights_only_eta=0.0)
    assert ra == rb and all(np.array_equal(x.link_weight, y.link_weight) for x, y in zip(a, b))
    c, rc = vary(weights_only_p_weight=0.02)
    assert rc != ra and not all(np.array_equal(x.link_weight, y.link_weight) for x, y in zip(a, c))


def test_weights_only_children_on_output_links_step_every_link_into_an_output_and_nothing_else():
    """weights_only_output: that share of the weights-only children keeps its parent's graph,
    activations and every weight but those of the links into an output node, which all move
    by Gaussian steps of weights_only_sigma (clipped to the bound); the other weights-only
    children take polynomial steps, and children that are not weights-only mutate as usual."""
    rng = np.random.default_rng(5)
    grow = CPPNEncoding((3, 8, 8), **BOLD)
    parents = grow.random(200, rng)
    for _ in range(4):
        parents = grow.vary(parents, rng, 0)
    into = [(p.link_dst >= N_INPUTS) & (p.link_dst < N_INPUTS + p.n_out) for p in parents]

    def children(share, sigma=0.05, p_weights_only=1.0):
        enc = CPPNEncoding((3, 8, 8), p_weights_only=p_weights_only, weights_only_output=share,
                           weights_only_sigma=sigma, weights_only_p_weight=0.02, **BOLD)
        return enc.vary(parents, np.random.default_rng(6), 0)

    def output_only(p, c, out):  # every output link moved, nothing else
        return (same_graph(p, c) and np.array_equal(c.link_weight[~out], p.link_weight[~out])
                and bool(np.all(c.link_weight[out] != p.link_weight[out])))

    steps = []
    for p, c, out in zip(parents, children(1.0), into):
        assert output_only(p, c, out) and np.array_equal(p.node_act, c.node_act)
        steps.append(c.link_weight[out].astype(np.float64) - p.link_weight[out])
    steps = np.concatenate(steps)
    assert steps.size > 600 and 0.045 < steps.std() < 0.055 and abs(steps.mean()) < 0.01
    wide = children(1.0, sigma=1000.0)
    assert max(np.abs(c.link_weight - p.link_weight).max() for p, c in zip(parents, wide)) > 1
    assert all(np.abs(c.link_weight).max() <= 10.0 for c in wide)
    mixed = [output_only(p, c, out) for p, c, out in zip(parents, children(0.25), into)]
    assert 0.15 < np.mean(mixed) < 0.35  # a quarter step their output links ...
    assert all(same_graph(p, c) for p, c in zip(parents, children(0.25)))  # ... the rest only weights too
    assert not any(output_only(p, c, out) for p, c, out in zip(parents, children(0.0), into) if out.sum() > 2)
    half = [same_graph(p, c) for p, c in zip(parents, children(1.0, p_weights_only=0.5))]
    assert 0.3 < np.mean(half) < 0.9  # the other half mostly change their graphs


def test_layers_detect_cycles():
    import pytest

    with pytest.raises(ValueError, match="cycle"):
        compute_layers(7, np.array([5, 6, 0]), np.array([6, 5, 5]))
