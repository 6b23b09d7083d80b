"""Emitters and the engine as their scheduler: shares, ask/tell slices, custom emitters,
selectors, and each emitter's state."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from evofool.archive import ClassArchive
from evofool.emitters import (CURIOSITY_DECAY, LAGGING_UNIFORM_SHARE, SELECTIONS, CuriositySelector, Emitter,
                              LaggingSelector, MutationEmitter, StepRecombination, StepRecombinationEmitter,
                              UniformSelector, WEIGHT_STEP_SIGMA0, WeightStepEmitter, make_selector)
from evofool.emitters._selector import CURIOSITY_PRIOR, children_that_entered
from evofool.encodings.direct import DirectEncoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator
from evofool.models.base import Classifier
from genome_helpers import same_graph

K = 4


def bright_classifier() -> Classifier:
    """Class 0's logit is the sum of the pixels, class 1's minus it: an all-white image is
    class 0's best possible one (every pixel raises its log-probability)."""
    linear = nn.Linear(36, K)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0] = 1.0
        linear.weight[1] = -1.0
        linear.weight[2, ::2] = 1.0
        linear.weight[2, 1::2] = -1.0
    return Classifier("bright", nn.Sequential(nn.Flatten(), linear), (1, 6, 6), [f"c{i}" for i in range(K)])


def engine_with(emitters, population=16, seed=0) -> Engine:
    clf = bright_classifier()
    enc = emitters[0].encoding
    return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(K, enc), population,
                  np.random.default_rng(seed), emitters=emitters)


class RandomEmitter(Emitter):
    """A custom emitter: random genomes, ``size`` of them (None: a share of the rest)."""

    name = "random"

    def __init__(self, encoding, size=None):
        super().__init__(encoding)
        self.size = size
        self.asked, self.told = [], []

    @property
    def batch_size(self):
        return self.size

    def ask(self, archive, n, rng, generation):
        genomes = self.encoding.random(n, rng)
        self.asked.append(genomes)
        return genomes

    def tell(self, archive, genomes, images, fitness, rng):
        self.told.append((genomes, images, fitness))


class ConstantEmitter(Emitter):
    """A custom emitter that proposes the same genome ``size`` times and counts its tells."""

    name = "constant"

    def __init__(self, encoding, genome, size):
        super().__init__(encoding)
        self.genome, self.size, self.tells = genome, size, 0

    @property
    def batch_size(self):
        return self.size

    def ask(self, archive, n, rng, generation):
        return self.genome.expand(n, *self.genome.shape).clone()

    def tell(self, archive, genomes, images, fitness, rng):
        self.tells += 1

    def state_dict(self):
        return {"tells": self.tells}, {"genome": self.genome.numpy()}

    def load_state_dict(self, state, arrays):
        self.tells = int(state["tells"])
        self.genome = torch.from_numpy(arrays["genome"].copy())


def direct():
    return DirectEncoding((1, 6, 6))


# --- the scheduler ---------------------------------------------------------------------------
def test_ask_concatenates_the_emitters_in_order_and_tell_hands_each_its_slice():
    enc = direct()
    first, rest, last = RandomEmitter(enc, 3), RandomEmitter(enc), RandomEmitter(enc, 5)
    engine = engine_with([first, rest, last])
    assert engine.shares() == [3, 8, 5]  # the emitter without a batch size fills the population
    for _ in range(3):
        genomes = engine.ask()
        assert torch.equal(genomes, torch.cat([first.asked[-1], rest.asked[-1], last.asked[-1]]))
        images, log_probs = engine.score(genomes)
        engine.tell(genomes, images, log_probs)
        for emitter, rows in ((first, slice(0, 3)), (rest, slice(3, 11)), (last, slice(11, 16))):
            told_genomes, told_images, told_fitness = emitter.told[-1]
            assert torch.equal(told_genomes, genomes[rows]) and torch.equal(told_images, images[rows])
            assert torch.equal(told_fitness, log_probs[rows])
    assert engine.generation == 3 and engine.evaluations == 48


def test_emitters_without_a_batch_size_share_the_rest_and_sizes_must_fit():
    enc = direct()
    engine = engine_with([RandomEmitter(enc), RandomEmitter(enc, 3), RandomEmitter(enc)], population=16)
    assert engine.shares() == [7, 3, 6]  # 13 left: the first filler gets the odd one
    with pytest.raises(ValueError, match="do not fit"):
        engine_with([RandomEmitter(enc, 10), RandomEmitter(enc, 10)], population=16).shares()
    with pytest.raises(ValueError, match="do not fit"):
        engine_with([RandomEmitter(enc, 10)], population=16).shares()  # nobody fills the other 6
    with pytest.raises(ValueError, match="not both"):
        Engine(enc, BatchEvaluator(bright_classifier(), "cpu"), ClassArchive(K, enc), 16,
               np.random.default_rng(0), selection="lagging", emitters=[RandomEmitter(enc)])


def test_tell_needs_the_last_ask():
    engine = engine_with([MutationEmitter(direct())])
    genomes = engine.ask()
    images, log_probs = engine.score(genomes)
    with pytest.raises(ValueError, match="last ask"):
        engine.tell(genomes[:8], images[:8], log_probs[:8])
    genomes = engine.ask()
    engine.tell(genomes, *engine.score(genomes))
    with pytest.raises(ValueError, match="last ask"):  # each ask is told once
        engine.tell(genomes, *engine.score(genomes))


def test_a_custom_emitter_plugs_in_and_its_offspring_enter_the_archive():
    enc = direct()
    white = torch.full((1, 6, 6), 255, dtype=torch.uint8)
    constant = ConstantEmitter(enc, white, 2)
    engine = engine_with([MutationEmitter(enc, LaggingSelector()), constant])
    for _ in range(5):
        rec = engine.step()
    # Class 0's best possible image came from the custom emitter in generation 1 and stays.
    assert torch.equal(engine.archive.genomes[0], white) and torch.equal(engine.archive.images[0], white)
    assert int(engine.archive.generation[0]) == 1
    assert constant.tells == 5 and rec["evaluations"] == 5 * 16
    assert engine.config() == {"emitters": [{"type": "mutation", **LaggingSelector().config()},
                                            {"type": "constant"}]}


def test_a_run_of_random_genomes_only_works():
    enc = direct()
    engine = engine_with([RandomEmitter(enc)])
    for _ in range(3):
        engine.step()
    assert len(engine.archive.occupied) == K and engine.generation == 3


def test_a_step_recombination_emitter_needs_its_source_listed_before_it():
    enc = direct()
    mutation = MutationEmitter(enc)
    recombination = StepRecombinationEmitter(enc, mutation, 16)
    with pytest.raises(ValueError, match="not listed before"):
        engine_with([recombination, mutation])
    with pytest.raises(ValueError, match="not listed before"):
        engine_with([MutationEmitter(enc), recombination])
    assert engine_with([mutation, recombination]).recombination is recombination.recombination


# --- the mutation emitter ------------------------------------------------------------------------
def test_mutation_emitter_is_random_at_first_then_keeps_the_lineage_of_its_children():
    enc = direct()
    mutation = MutationEmitter(enc)
    engine = engine_with([mutation])
    engine.step()
    assert mutation.lineage is None  # random genomes have no parents
    genomes = engine.ask()
    images, log_probs = engine.score(genomes)
    champions = engine.archive.genomes.clone()
    engine.tell(genomes, images, log_probs)
    lineage = mutation.lineage
    assert torch.equal(lineage.parents, champions[lineage.classes])  # the champions before the update
    assert torch.equal(lineage.children, genomes) and torch.equal(lineage.fitness, log_probs)


def test_mutation_emitter_asked_for_nothing_draws_nothing():
    enc = direct()
    archive = ClassArchive(K, enc)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert len(MutationEmitter(enc).ask(archive, 0, rng, 1)) == 0
    assert rng.bit_generator.state == before


# --- selectors ---------------------------------------------------------------------------------
def test_uniform_selector_draws_only_occupied_cells():
    archive = ClassArchive(K, direct())
    archive.log_probs[:] = torch.tensor([-1.0, -torch.inf, -2.0, -torch.inf], dtype=torch.float64)
    picks = UniformSelector().select(archive, 20_000, np.random.default_rng(0))
    assert set(np.unique(picks)) == {0, 2}
    assert abs(np.mean(picks == 0) - 0.5) < 0.02


def test_lagging_selector_gives_three_quarters_to_lagging_cells_and_keeps_a_uniform_share():
    archive = ClassArchive(K, direct())
    # Cells 0 and 1 fooled (log p = 0 → confidence 1), 2 and 3 lagging.
    archive.log_probs[:] = torch.tensor([0.0, 0.0, -1.0, -2.0], dtype=archive.log_probs.dtype)
    n = 4000
    parents = LaggingSelector(focus_below=0.9999).select(archive, n, np.random.default_rng(1))
    n_all = int(round(LAGGING_UNIFORM_SHARE * n))
    assert LAGGING_UNIFORM_SHARE == 0.25
    assert np.isin(parents[:n - n_all], [2, 3]).all()           # the lagging part
    counts = np.bincount(parents[n - n_all:], minlength=4)      # the uniform part: every cell
    assert counts.min() > 0.2 * n_all and counts.max() < 0.3 * n_all
    # Once every cell is above the threshold, all parents are uniform over all cells.
    archive.log_probs[:] = 0.0
    counts = np.bincount(LaggingSelector().select(archive, n, np.random.default_rng(2)), minlength=4)
    assert counts.min() > 0.2 * n


def test_make_selector_knows_the_selections():
    assert SELECTIONS == ("uniform", "lagging", "curiosity")
    assert isinstance(make_selector("uniform"), UniformSelector)
    lagging = make_selector("lagging", focus_below=0.5)
    assert isinstance(lagging, LaggingSelector) and lagging.focus_below == 0.5
    curiosity = make_selector("curiosity", focus_below=0.5)
    assert isinstance(curiosity, CuriositySelector) and curiosity.focus_below == 0.5
    with pytest.raises(ValueError, match="unknown selection"):
        make_selector("best")


def test_children_that_entered_are_those_holding_a_cell_changed_this_generation():
    archive = ClassArchive(K, direct())
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]], dtype=torch.float64)
    archive.update(torch.zeros(1, 1, 6, 6, dtype=torch.uint8), torch.zeros(1, 1, 6, 6, dtype=torch.uint8), old, 1)
    fitness = torch.tensor([[-0.5, -2.0, -2.0, -2.0],    # takes cell 0
                            [-2.0, -2.0, -2.0, -2.0],    # takes nothing
                            [-2.0, -0.7, -0.2, -2.0],    # takes cells 1 and 2
                            [-2.0, -0.9, -2.0, -1.0]],   # beaten in cell 1, ties the old champion in 3
                           dtype=torch.float64)
    archive.update(torch.zeros(4, 1, 6, 6, dtype=torch.uint8), torch.zeros(4, 1, 6, 6, dtype=torch.uint8), fitness, 2)
    assert children_that_entered(archive, fitness, 2).tolist() == [True, False, True, False]
    assert children_that_entered(archive, fitness, 3).tolist() == [False] * 4


def test_curiosity_selector_learns_which_champions_parent_children_that_enter():
    enc = direct()
    archive = ClassArchive(K, enc)
    archive.log_probs[:] = torch.tensor([-1.0, -1.0, -1.0, -torch.inf], dtype=torch.float64)
    archive.generation[:] = torch.tensor([1, 1, 1, -1])
    selector = CuriositySelector(uniform_share=0.0)
    rng = np.random.default_rng(0)
    # Before anything is known every occupied cell has the prior: uniform, empty cells never.
    counts = np.bincount(selector.select(archive, 6000, rng), minlength=K)
    assert counts[3] == 0 and counts[:3].min() > 0.3 * 2000
    # Generation 2: of cell 0's ten children only the best one for class 2 enters (taking
    # cell 2); cell 1's ten children never do.
    classes = np.array([0] * 10 + [1] * 10)
    fitness = torch.full((20, K), -5.0, dtype=torch.float64)
    fitness[:, 3] = -torch.inf
    fitness[:10, 2] = torch.linspace(-0.9, -0.5, 10, dtype=torch.float64)
    archive.update(torch.zeros(20, 1, 6, 6, dtype=torch.uint8), torch.zeros(20, 1, 6, 6, dtype=torch.uint8),
                   fitness, 2)
    selector.tell(archive, classes, fitness, 2)
    prior_s, prior_t = CURIOSITY_PRIOR
    assert selector.successes[0] == pytest.approx(prior_s * CURIOSITY_DECAY + 1)
    assert selector.tries[0] == pytest.approx(prior_t * CURIOSITY_DECAY + 10)
    assert selector.successes[1] == pytest.approx(prior_s * CURIOSITY_DECAY)
    assert selector.tries[1] == pytest.approx(prior_t * CURIOSITY_DECAY + 10)
    # Cell 2 has a new champion: its counts start again from the prior.
    assert (selector.successes[2], selector.tries[2]) == CURIOSITY_PRIOR
    counts = np.bincount(selector.select(archive, 30_000, rng), minlength=K)
    rates = selector.successes[:3] / selector.tries[:3]
    assert np.allclose(counts[:3] / counts.sum(), rates / rates.sum(), atol=0.01)
    assert counts[2] > counts[0] > counts[1]  # untried new champion > one success in ten > none


def test_curiosity_selector_keeps_a_uniform_share_and_focuses_on_lagging_cells():
    archive = ClassArchive(K, direct())
    archive.log_probs[:] = torch.tensor([0.0, 0.0, -1.0, -2.0], dtype=torch.float64)  # 0, 1 fooled
    n = 4000
    parents = CuriositySelector(focus_below=0.9999).select(archive, n, np.random.default_rng(1))
    n_all = int(round(LAGGING_UNIFORM_SHARE * n))
    assert np.isin(parents[:n - n_all], [2, 3]).all()
    assert np.bincount(parents[n - n_all:], minlength=4).min() > 0.2 * n_all


def test_curiosity_selector_state_round_trips_through_its_emitter():
    enc = direct()
    a = engine_with([MutationEmitter(enc, CuriositySelector())], population=16, seed=3)
    for _ in range(4):
        a.step()
    state, arrays = a.state_dict()
    assert set(arrays) >= {"emitters.0.selector.successes", "emitters.0.selector.tries"}
    b = engine_with([MutationEmitter(direct(), CuriositySelector())], population=16, seed=8)
    b.load_state_dict(json.loads(json.dumps(state)), arrays)
    assert np.array_equal(b.emitters[0].selector.tries, a.emitters[0].selector.tries)
    for _ in range(4):
        assert a.step() | {"seconds": 0, "evals_per_s": 0} == b.step() | {"seconds": 0, "evals_per_s": 0}
    assert torch.equal(a.archive.log_probs, b.archive.log_probs)
    assert np.array_equal(a.emitters[0].selector.successes, b.emitters[0].selector.successes)


# --- state ---------------------------------------------------------------------------------------
def json_round_trip(emitter):
    state, arrays = emitter.state_dict()
    return json.loads(json.dumps(state)), {k: np.array(v) for k, v in arrays.items()}


def test_mutation_emitter_state_round_trips():
    enc = direct()
    archive = ClassArchive(K, enc)
    archive.update(enc.random(8, np.random.default_rng(0)), enc.random(8, np.random.default_rng(0)),
                   torch.randn(8, K, dtype=torch.float64), 1)
    a, b = MutationEmitter(enc, LaggingSelector(0.5)), MutationEmitter(enc, LaggingSelector(0.5))
    state, arrays = json_round_trip(a)
    assert (state, arrays) == ({}, {})  # nothing carries over between generations
    b.load_state_dict(state, arrays)
    asked = [e.ask(archive, 10, np.random.default_rng(3), 2) for e in (a, b)]
    assert torch.equal(*asked)


def test_step_recombination_emitter_state_round_trips():
    enc = direct()
    a = StepRecombinationEmitter(enc, MutationEmitter(enc), 16, StepRecombination(scales=(2.0,)))
    b = StepRecombinationEmitter(enc, MutationEmitter(enc), 16, StepRecombination(scales=(2.0,)))
    b.pending = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    b.load_state_dict(*json_round_trip(a))  # nothing pending
    assert b.pending is None and b.batch_size == 0
    a.pending = torch.randint(0, 256, (3, 1, 6, 6), dtype=torch.uint8)
    b.load_state_dict(*json_round_trip(a))
    assert b.batch_size == 3 and torch.equal(a.pending, b.pending)
    archive = ClassArchive(K, enc)
    assert torch.equal(b.ask(archive, 3, np.random.default_rng(0), 1), a.pending)
    with pytest.raises(ValueError, match="waiting"):
        b.ask(archive, 2, np.random.default_rng(0), 1)


def test_engine_state_holds_each_emitters_state_and_restores_an_identical_future():
    def make(seed):
        enc = direct()
        mutation = MutationEmitter(enc, LaggingSelector())
        emitters = [mutation, StepRecombinationEmitter(enc, mutation, 32, StepRecombination(min_offspring=2)),
                    ConstantEmitter(enc, torch.zeros(1, 6, 6, dtype=torch.uint8), 1)]
        return engine_with(emitters, population=32, seed=seed)

    a = make(5)
    for _ in range(3):
        a.step()
    state, arrays = a.state_dict()
    state = json.loads(json.dumps(state))
    assert [e["type"] for e in state["emitters"]] == ["mutation", "step_recombination", "constant"]
    assert state["emitters"][2]["state"] == {"tells": 3} and "emitters.2.genome" in arrays
    pending = a.emitters[1].batch_size
    assert pending > 0 and state["emitters"][1]["state"] == {"pending": pending}
    b = make(99)
    b.load_state_dict(state, arrays)
    assert b.emitters[2].tells == 3 and torch.equal(b.emitters[1].pending, a.emitters[1].pending)
    for _ in range(3):
        assert a.step() | {"seconds": 0, "evals_per_s": 0} == b.step() | {"seconds": 0, "evals_per_s": 0}
    assert torch.equal(a.archive.images, b.archive.images)
    assert torch.equal(a.archive.log_probs, b.archive.log_probs)
    # A checkpoint of other emitters, or of an engine from before emitters, does not load.
    with pytest.raises(ValueError, match="emitters"):
        engine_with([MutationEmitter(direct())], population=32).load_state_dict(state, arrays)
    # (A checkpoint from before emitters is translated: tests/test_engine.py.)


# --- weight steps (per-cell 1+1-ES on CPPN weights) ------------------------------------------------
def thousand_class_stand_in() -> Classifier:
    """A stand-in for an ImageNet model: 1,000 classes over 3×16×16 images, seeded weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 1000))
    return Classifier("stand-in-1000", net.eval(), (3, 16, 16), [f"class {i}" for i in range(1000)])


def cppn(**params):
    from evofool.encodings.cppn import CPPNEncoding
    return CPPNEncoding((3, 16, 16), **params)


def test_step_weights_moves_every_weight_of_the_same_graph_by_its_parents_sigma():
    enc = cppn()
    parents = enc.random(3, np.random.default_rng(0))
    children = enc.step_weights(parents, np.array([0.0, 0.5, 50.0]), np.random.default_rng(1))
    for p, c in zip(parents, children):
        assert c.parent == p.gid and c.gid != p.gid
        for name in ("node_id", "node_act", "node_layer", "link_id", "link_src", "link_dst"):
            assert np.array_equal(getattr(c, name), getattr(p, name))
    assert np.array_equal(children[0].link_weight, parents[0].link_weight)        # sigma 0: unchanged
    step = children[1].link_weight - parents[1].link_weight
    assert (step != 0).all() and 0.2 < np.std(step) < 1.0                          # every weight moves
    assert np.abs(children[2].link_weight).max() <= enc.rates.weight_bound        # clipped to the bound
    again = enc.step_weights(parents, np.array([0.0, 0.5, 50.0]), np.random.default_rng(1))
    assert all(np.array_equal(a.link_weight, b.link_weight) for a, b in zip(children, again))


def test_weight_step_emitter_follows_the_one_fifth_rule_per_cell():
    from evofool.emitters._weight_step import SUCCESS_TARGET, WEIGHT_STEP_GAIN
    enc = cppn()
    archive = ClassArchive(4, enc)
    genomes = enc.random(4, np.random.default_rng(0))
    archive.update(genomes, torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                   torch.diag(torch.full((4,), 1.0, dtype=torch.float64)) - 3.0, 1)
    emitter = WeightStepEmitter(enc, 8, LaggingSelector())
    children = emitter.ask(archive, 8, np.random.default_rng(1), 2)
    classes, _ = emitter._asked
    before = archive.fitness[torch.from_numpy(classes)]
    fitness = torch.full((8, 4), -9.0, dtype=torch.float64)
    # The first child beats its parent for the parent's class; the others do not.
    fitness[0, classes[0]] = before[0] + 0.1
    emitter.tell(archive, children, torch.zeros(8, 3, 16, 16, dtype=torch.uint8), fitness, np.random.default_rng(2))
    expected = np.full(4, WEIGHT_STEP_SIGMA0)
    for i, c in enumerate(classes):
        expected[c] *= np.exp(WEIGHT_STEP_GAIN * ((i == 0) - SUCCESS_TARGET))
    assert np.allclose(emitter.sigma, expected)
    assert emitter.config()["type"] == "weight_step" and emitter.batch_size == 8
    with pytest.raises(ValueError, match="no weights to step"):
        WeightStepEmitter(direct(), 4)


def test_mutation_emitter_tells_the_encoding_its_parents_confidences():
    """cppn's weights_only_above: the p_weights_only share (here all) goes only to children of
    champions at least that confident of their class; the mutation emitter hands the encoding
    each parent's confidence. Structural mutation always fires here, so a child that kept its
    parent's graph was a weights-only child."""
    enc = cppn(p_weights_only=1.0, weights_only_above=0.5, p_add_node=1.0, p_add_link=1.0)
    assert enc.uses_parent_confidence and not cppn(p_weights_only=1.0).uses_parent_confidence
    rng = np.random.default_rng(0)
    archive = ClassArchive(K, enc)
    champions = enc.random(K, rng)
    confident = np.array([0.9, 0.6, 0.4, 0.1])  # classes 0 and 1 at or above 0.5
    archive.update(champions, enc.render(champions), torch.log(torch.diag(torch.from_numpy(confident))
                                                                .clamp_min(1e-300)), 1)
    emitter = MutationEmitter(enc, UniformSelector())
    children = emitter.ask(archive, 400, rng, 2)
    classes = emitter._asked[0]
    kept = np.array([same_graph(archive.genomes[c], child) for c, child in zip(classes, children)])
    assert not kept[classes >= 2].any()                # below the threshold: mutated as usual
    assert 0.6 < kept[classes < 2].mean() < 0.85       # weights only, unless no weight changed
    # The same encoding varied without confidences (vary itself) gives no weights-only child.
    plain = enc.vary(archive.genomes_of(classes), rng, 2)
    assert not any(same_graph(archive.genomes[c], child) for c, child in zip(classes, plain))


def resumed_steps_agree(a: Engine, b: Engine, generations: int) -> None:
    """``b`` given ``a``'s state (through JSON, as a checkpoint holds it) runs the next
    ``generations`` exactly as ``a`` does, record for record (timings aside)."""
    state, arrays = a.state_dict()
    b.load_state_dict(json.loads(json.dumps(state)), arrays)
    for _ in range(generations):
        assert a.step() | {"seconds": 0, "evals_per_s": 0} == b.step() | {"seconds": 0, "evals_per_s": 0}


@pytest.mark.parametrize("selection", ["curiosity", "lagging"])
@pytest.mark.parametrize("variant", ["weight-steps", "fine-tune", "extrapolate"])
def test_new_emitters_on_a_thousand_class_stand_in_keep_the_archive_invariants_and_resume_exactly(selection,
                                                                                                    variant):
    """The ImageNet-scale rules in small: per-cell weight steps; weights-only children of
    the champions above a confidence (cppn p_weights_only / weights_only_above), with their
    own sparse rate and eta (weights_only_p_weight / weights_only_eta); and those with their
    winning steps continued (extrapolate)."""
    steps = 12 if variant == "weight-steps" else 0
    lengths = (0.5, 1.0, 2.0) if variant == "extrapolate" else ()
    # A 1,000-class softmax starts near 0.001 a class: 0.0015 lets some parents through.
    params = {} if variant == "weight-steps" else {"p_weights_only": 0.8, "weights_only_above": 0.0015,
                                                    "weights_only_p_weight": 0.02, "weights_only_eta": 100.0,
                                                    "p_add_node": 1.0}

    def make(seed):
        enc = cppn(**params)
        clf = thousand_class_stand_in()
        return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(1000, enc), 24, np.random.default_rng(seed),
                      selection=selection, weight_steps=steps, extrapolate=lengths)

    a = make(4)
    assert [e.name for e in a.emitters] == (["mutation", "weight_step"][:1 + bool(steps)]
                                            + ["extrapolation"] * bool(lengths))
    record = a.step()
    assert len(a.archive.occupied) == 1000 and record["evaluations"] == 24  # one image scores every class
    previous = a.archive.fitness.clone()
    kept = 0
    for generation in range(2, 5):
        a.step()
        assert (a.archive.fitness >= previous).all()  # a champion is only ever replaced by a better one
        previous = a.archive.fitness.clone()
        lineage = a.emitters[0].lineage
        kept += sum(same_graph(p, c) for p, c in zip(lineage.parents, lineage.children))
    if steps:
        sigma = a.emitters[1].sigma
        assert sigma is not None and ((sigma >= 1e-3) & (sigma <= 5.0)).all() and (sigma != WEIGHT_STEP_SIGMA0).any()
    else:
        assert kept > 0  # weights-only children of parents above the threshold (the rest gain a node)
    if lengths:  # on to a checkpoint with proposals waiting
        for _ in range(40):
            if a.emitters[-1].batch_size:
                break
            a.step()
        assert a.emitters[-1].batch_size % len(lengths) == 0 and a.emitters[-1].batch_size > 0
    b = make(77)
    resumed_steps_agree(a, b, 3)
    assert torch.equal(a.archive.fitness, b.archive.fitness)
    if steps:
        assert np.array_equal(a.emitters[1].sigma, b.emitters[1].sigma)
    if lengths:
        assert np.array_equal(a.emitters[-1].steps, b.emitters[-1].steps)


@pytest.mark.parametrize("mutation", ["lattice", "waves", "rings", "patterns"])
def test_direct_pattern_mutations_on_a_thousand_class_stand_in_keep_the_archive_invariants_and_resume_exactly(
        mutation):
    """The direct encoding's structured mutations at ImageNet's class count, in small, with
    step recombination (the direct encoding's default) proposing from their children."""
    def make(seed):
        enc = DirectEncoding((3, 16, 16), mutation=mutation, init="flat")
        return Engine(enc, BatchEvaluator(thousand_class_stand_in(), "cpu"), ClassArchive(1000, enc), 24,
                      np.random.default_rng(seed), selection="lagging", recombination=StepRecombination())

    a = make(4)
    a.step()
    assert len(a.archive.occupied) == 1000
    previous, first = a.archive.fitness.clone(), np.median(a.archive.confidences())
    for _ in range(6):
        a.step()
        assert (a.archive.fitness >= previous).all()
        previous = a.archive.fitness.clone()
        # The stored image of every champion is its genome (the direct encoding renders nothing).
        assert torch.equal(a.archive.images, a.archive.genomes)
    assert np.median(a.archive.confidences()) > first  # flat colours are beaten within 6 generations
    b = make(77)
    resumed_steps_agree(a, b, 3)
    assert torch.equal(a.archive.genomes, b.archive.genomes)


# --- gradient refinement (--refine grad: not black-box) ---------------------------------------
def stand_in_objective(clf: Classifier):
    from evofool.job import gradient_objective
    return gradient_objective(clf)


def test_gradient_refine_moves_only_weights_and_climbs_each_childs_own_class():
    from evofool.emitters import GradientRefineEmitter

    enc, clf = cppn(), thousand_class_stand_in()
    archive = ClassArchive(1000, enc)
    rng = np.random.default_rng(0)
    first = enc.random(64, rng)
    evaluator = BatchEvaluator(clf, "cpu")
    archive.update(first, enc.render(first), evaluator.log_probs(enc.render(first)), 1)
    emitter = GradientRefineEmitter(enc, 12, stand_in_objective(clf), steps=4)
    children = emitter.ask(archive, 12, rng, 2)
    assert emitter.extra_evaluations == 3 * 4 * 12 and emitter.batch_size == 12
    gids = {g.gid for g in archive.genomes}
    for child in children:  # each child: its parent's graph with other weights, a new id
        parent = next(g for g in archive.genomes if g.gid == child.parent)
        for name in ("node_id", "node_act", "node_layer", "link_id", "link_src", "link_dst"):
            assert np.array_equal(getattr(child, name), getattr(parent, name))
        assert child.gid not in gids and np.abs(child.link_weight).max() <= enc.weight_bound
        assert not np.array_equal(child.link_weight, parent.link_weight)
    # Which class a child climbs is its parent's cell (a genome may hold several cells).
    classes = rng.choice(1000, 12, replace=False)
    parents = archive.genomes_of(classes)
    refined = enc.with_weights(parents, emitter.refine(parents, classes))
    before = evaluator.log_probs(enc.render(parents))[np.arange(12), classes]
    after = evaluator.log_probs(enc.render(refined))[np.arange(12), classes]
    # Gradient steps up the class, seen through quantised, re-rendered, re-scored images.
    assert (after > before).float().mean() >= 0.75 and (after - before).median() > 0


def test_cppn_refine_moves_only_the_links_into_the_outputs_unless_told_every_link():
    """refine_links=output (the default): a refined child's links into its output nodes move
    (Adam's first step ~ lr each), every inner link keeps its parent's bits; refine_links=all
    moves inner links too. Either way the children climb their parents' classes."""
    from evofool.emitters import GradientRefineEmitter
    from evofool.encodings.cppn import CPPNEncoding
    from evofool.encodings.cppn_genome import N_INPUTS

    clf, rng = thousand_class_stand_in(), np.random.default_rng(1)
    evaluator = BatchEvaluator(clf, "cpu")
    for links in ("output", "all"):
        enc = CPPNEncoding((3, 16, 16), refine_links=links)
        parents = enc.random(16, np.random.default_rng(3))
        for _ in range(3):  # grow inner nodes and links, as evolution does
            parents = enc.vary(parents, rng, 1)
        classes = evaluator.log_probs(enc.render(parents)).argmin(1).numpy()  # far from the top
        emitter = GradientRefineEmitter(enc, 16, stand_in_objective(clf), steps=2, adapt=False)
        assert emitter.lr == {"output": 0.01, "all": 3e-4}[links]
        children = enc.with_weights(parents, emitter.refine(parents, classes))
        into_output = np.concatenate([(p.link_dst >= N_INPUTS) & (p.link_dst < N_INPUTS + 3) for p in parents])
        mask = enc.refine_mask(parents)
        assert (mask is None) == (links == "all") and (mask is None or np.array_equal(mask, into_output))
        moved = enc.weights_of(children) != enc.weights_of(parents)
        # (a few have no gradient: a source at zero, or a channel clipped at |v| >= 1)
        assert into_output.any() and (~into_output).any() and moved[into_output].mean() > 0.75
        if links == "output":
            assert not moved[~into_output].any()
        else:
            assert moved[~into_output].mean() > 0.5
        before = evaluator.log_probs(enc.render(parents))[np.arange(16), classes]
        after = evaluator.log_probs(enc.render(children))[np.arange(16), classes]
        assert (after > before).float().mean() >= 0.75


def test_cppn_dense_refine_steps_the_read_out_links_it_adds():
    """refine_links=dense: the children ask hands the batch carry a link from every input and
    hidden node into every output (``refine_graphs``), only links into outputs moved, and
    they climb their parents' classes."""
    from evofool.emitters import GradientRefineEmitter
    from evofool.encodings.cppn import CPPNEncoding
    from evofool.encodings.cppn_genome import N_INPUTS

    clf, rng = thousand_class_stand_in(), np.random.default_rng(1)
    evaluator = BatchEvaluator(clf, "cpu")
    enc = CPPNEncoding((3, 16, 16), refine_links="dense")
    parents = enc.random(16, np.random.default_rng(3))
    for _ in range(3):  # grow inner nodes and links, as evolution does
        parents = enc.vary(parents, rng, 1)
    emitter = GradientRefineEmitter(enc, 16, stand_in_objective(clf), steps=2, adapt=False)
    assert emitter.lr == 0.01
    archive = ClassArchive(1000, enc)
    archive.update(parents, enc.render(parents), evaluator.log_probs(enc.render(parents)), 1)
    for c in emitter.ask(archive, 16, np.random.default_rng(5), 2):
        into = (c.link_dst >= N_INPUTS) & (c.link_dst < N_INPUTS + 3)
        assert into.sum() == 3 * (c.n_nodes - 3)  # every input and hidden node into every output
    classes = evaluator.log_probs(enc.render(parents)).argmin(1).numpy()  # far from the top
    dense = enc.refine_graphs(parents)
    children = enc.with_weights(dense, emitter.refine(dense, classes))
    into_output = np.concatenate([(d.link_dst >= N_INPUTS) & (d.link_dst < N_INPUTS + 3) for d in dense])
    moved = enc.weights_of(children) != enc.weights_of(dense)
    assert not moved[~into_output].any() and moved[into_output].mean() > 0.5
    before = evaluator.log_probs(enc.render(parents))[np.arange(16), classes]
    after = evaluator.log_probs(enc.render(children))[np.arange(16), classes]
    assert (after > before).float().mean() >= 0.75


def test_gradient_refine_of_direct_genomes_steps_the_pixels_up_each_childs_class():
    """Direct genomes: the pixels are the weights (``x / 255 - 1/2``, clamped to the image's
    range); a child is its parent's image after the steps, quantised to 8 bits."""
    from evofool.emitters import GradientRefineEmitter

    enc, clf = DirectEncoding((3, 16, 16)), thousand_class_stand_in()
    archive = ClassArchive(1000, enc)
    rng = np.random.default_rng(0)
    first = enc.random(64, rng)
    evaluator = BatchEvaluator(clf, "cpu")
    archive.update(first, first, evaluator.log_probs(first), 1)
    emitter = GradientRefineEmitter(enc, 12, stand_in_objective(clf), steps=3, lr=0.02)
    classes = rng.choice(1000, 12, replace=False)
    parents = archive.genomes_of(classes)
    refined = enc.with_weights(parents, emitter.refine(parents, classes))
    assert refined.dtype == torch.uint8 and refined.shape == parents.shape
    # Adam's first steps move nearly every pixel by about lr (5 grey levels) per step.
    moved = (refined.int() - parents.int()).abs()
    assert moved.max() <= 3 * 0.02 * 255 + 1 and (moved > 0).float().mean() > 0.5
    before = evaluator.log_probs(parents)[np.arange(12), classes]
    after = evaluator.log_probs(refined)[np.arange(12), classes]
    assert (after > before).all()
    children = emitter.ask(archive, 12, rng, 2)
    assert children.shape == (12, 3, 16, 16) and emitter.extra_evaluations == 3 * 3 * 12


def test_gradient_steps_count_three_evaluations_each_and_resume_exactly():
    from evofool.emitters import GradientRefineEmitter

    def make(seed):
        enc, clf = cppn(), thousand_class_stand_in()
        refine = GradientRefineEmitter(enc, 6, stand_in_objective(clf), steps=2)
        return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(1000, enc), 24, np.random.default_rng(seed),
                      selection="curiosity", extra_emitters=[refine])

    a = make(5)
    assert [e.name for e in a.emitters] == ["mutation", "gradient_refine"] and a.shares() == [18, 6]
    records = [a.step() for _ in range(3)]
    # Generation 1 is random (no gradient steps); then 24 images + 6 children × 2 steps × 3.
    assert [r["evaluations"] for r in records] == [24, 24 + 60, 24 + 2 * 60]
    b = make(77)
    resumed_steps_agree(a, b, 2)
    assert torch.equal(a.archive.fitness, b.archive.fitness)
    with pytest.raises(ValueError, match="not both"):
        Engine(cppn(), BatchEvaluator(thousand_class_stand_in(), "cpu"), ClassArchive(1000, cppn()), 8,
               np.random.default_rng(0), emitters=[MutationEmitter(cppn())], extra_emitters=[a.emitters[1]])


def test_gradient_refine_adapt_steps_each_genome_at_its_cells_lr_and_follows_the_one_fifth_rule():
    """--refine-adapt on: a cell's factor on lr is Adam's step scaled for its genomes (their
    moments do not depend on lr), and moves by the 1/5 success rule between ADAPT_FLOOR and 1."""
    from evofool.emitters import GradientRefineEmitter
    from evofool.emitters._gradient_refine import ADAPT_FLOOR
    from evofool.emitters._weight_step import SUCCESS_TARGET, WEIGHT_STEP_GAIN

    enc, clf = DirectEncoding((3, 16, 16)), thousand_class_stand_in()
    emitter = GradientRefineEmitter(enc, 4, stand_in_objective(clf), steps=1, lr=0.02)  # adapt: the default
    parent = enc.random(1, np.random.default_rng(0)).repeat(3, 1, 1, 1)
    start = enc.weights_of(parent).reshape(3, -1)
    moved = emitter.refine(parent, np.array([7, 7, 7]), np.array([1.0, 0.25, ADAPT_FLOOR])).reshape(3, -1) - start
    inside = (np.abs(start + moved) < enc.weight_bound - 1e-3).all(axis=0)  # not clamped in any row
    assert inside.mean() > 0.5 and (np.abs(moved[0][inside]) > 0.01).all()  # Adam's first step ~ lr
    np.testing.assert_allclose(moved[1][inside], 0.25 * moved[0][inside], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(moved[2][inside], ADAPT_FLOOR * moved[0][inside], rtol=1e-4, atol=1e-7)
    # Without adapt (and before it), one lr: the same bits as before per-cell steps existed.
    plain = GradientRefineEmitter(enc, 4, stand_in_objective(clf), steps=1, lr=0.02, adapt=False)
    assert np.array_equal(plain.refine(parent, np.array([7, 7, 7])),
                          emitter.refine(parent, np.array([7, 7, 7]), np.ones(3)))

    archive = ClassArchive(1000, enc)
    rng = np.random.default_rng(0)
    first = enc.random(64, rng)
    archive.update(first, first, BatchEvaluator(clf, "cpu").log_probs(first), 1)
    for generation in (2, 3, 4):
        children = emitter.ask(archive, 4, rng, generation)
        classes, before = emitter._asked
        assert emitter.extra_evaluations == 3 * 1 * 4
        fitness = torch.full((4, 1000), -50.0, dtype=torch.float64)
        fitness[0, classes[0]] = before[0] + 0.1  # the first child beats its parent, the others do not
        log = np.log(emitter.lr_scale if emitter.lr_scale is not None else np.ones(1000))
        np.add.at(log, classes, WEIGHT_STEP_GAIN * (np.arange(4) == 0) - WEIGHT_STEP_GAIN * SUCCESS_TARGET)
        emitter.tell(archive, children, children, fitness, rng)
        np.testing.assert_allclose(emitter.lr_scale, np.clip(np.exp(log), ADAPT_FLOOR, 1.0))
    assert emitter.lr_scale.max() == 1.0 and emitter.lr_scale.min() < 1.0
    assert emitter.config()["adapt"]["floor"] == ADAPT_FLOOR and "adapt" not in plain.config()
    state, arrays = emitter.state_dict()
    restored = GradientRefineEmitter(enc, 4, stand_in_objective(clf), steps=1, lr=0.02, adapt=True)
    restored.load_state_dict(json.loads(json.dumps(state)), arrays)
    assert np.array_equal(restored.lr_scale, emitter.lr_scale)
    assert plain.state_dict() == ({}, {})  # a run without adapt checkpoints what it did before


def test_refine_balance_moves_the_share_towards_the_side_that_gains_more_per_evaluation():
    """--refine-balance on: the share starts at size / population, moves x1.1 per generation
    towards whichever side's averaged gain per evaluation is higher, stays within
    [BALANCE_LOW, BALANCE_HIGH] (at least one place), and is checkpointed exactly."""
    from evofool.emitters import GradientRefineEmitter
    from evofool.emitters._gradient_refine import BALANCE_GAIN, BALANCE_HIGH, BALANCE_LOW

    enc, clf = cppn(), thousand_class_stand_in()
    fixed = GradientRefineEmitter(enc, 10, stand_in_objective(clf))
    assert fixed.batch_size == 10 and not fixed.observes_gains and "balance" not in fixed.config()
    emitter = GradientRefineEmitter(enc, 10, stand_in_objective(clf), balance=100)
    assert emitter.observes_gains and emitter.batch_size == 10 and emitter.config()["balance"]["population"] == 100
    emitter.observe((5.0, 130), (1.0, 90))  # nothing refined this generation (the first): ignored
    assert emitter.share == 0.1 and emitter.rates is None
    emitter.extra_evaluations = 30
    emitter.observe((5.0, 40), (1.0, 90))  # the refined side gains more per evaluation: it grows
    assert emitter.share == pytest.approx(0.1 * BALANCE_GAIN) and emitter.batch_size == 11
    state, arrays = emitter.state_dict()
    for _ in range(3):  # an average: a few poor generations do not turn it at once
        emitter.observe((0.0, 40), (1.0, 90))
    assert emitter.share == pytest.approx(0.1 * BALANCE_GAIN ** 4) and emitter.rates[0] > emitter.rates[1]
    for _ in range(100):
        emitter.observe((0.0, 40), (1.0, 90))
    assert emitter.share == BALANCE_LOW and emitter.batch_size == 1
    for _ in range(200):
        emitter.observe((9.0, 40), (1.0, 90))
    assert emitter.share == BALANCE_HIGH and emitter.batch_size == 90
    again = GradientRefineEmitter(enc, 10, stand_in_objective(clf), balance=100)
    again.load_state_dict(json.loads(json.dumps(state)), arrays)
    assert again.share == 0.1 * BALANCE_GAIN and again.rates == [5.0 / 40, 1.0 / 90]
    with pytest.raises(ValueError, match="refine share"):
        again.load_state_dict({"share": 0.95, "rates": None}, {})


def test_the_engine_tells_observers_what_each_side_of_the_batch_gained_and_cost():
    """The gains an emitter observes are the archive's: over a generation, its rows' and the
    rest's add up to the rise of every cell that was occupied before, and the costs to the
    evaluations the generation spent."""
    from evofool.emitters import GradientRefineEmitter

    seen = []

    class Watching(GradientRefineEmitter):
        def observe(self, own, rest):
            seen.append((own, rest))
            super().observe(own, rest)

    enc, clf = cppn(), thousand_class_stand_in()
    refine = Watching(enc, 6, stand_in_objective(clf), steps=1, balance=24)
    engine = Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(1000, enc), 24, np.random.default_rng(2),
                    selection="curiosity", extra_emitters=[refine])
    engine.step()
    for _ in range(4):
        before, evaluations, places = engine.archive.fitness.clone(), engine.evaluations, refine.batch_size
        engine.step()
        rise = engine.archive.fitness - before
        own, rest = seen[-1]
        assert own[0] + rest[0] == pytest.approx(float(rise[torch.isfinite(before)].sum()))
        assert own[1] == places + 3 * places and own[1] + rest[1] == engine.evaluations - evaluations
        assert own[0] >= 0 and rest[0] >= 0
    assert len(seen) == 5 and any(own[0] > 0 for own, _ in seen[1:])


# --- extrapolation (a winning weight step, continued) ------------------------------------------
def extrapolation_setup(lengths=(0.5, 2.0)):
    """Four cppn champions at log-probability -3 of their own class (-4 of the others); a mutation emitter whose
    children change only weights; an extrapolation emitter learning from it."""
    from evofool.emitters import ExtrapolationEmitter
    enc = cppn(p_weights_only=1.0, weights_only_p_weight=0.5)  # every child moves a weight, nothing else
    archive = ClassArchive(4, enc)
    champions = enc.random(4, np.random.default_rng(0))
    archive.update(champions, torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                   torch.diag(torch.full((4,), 1.0, dtype=torch.float64)) - 4.0, 1)
    mutation = MutationEmitter(enc, UniformSelector())
    return enc, archive, mutation, ExtrapolationEmitter(enc, mutation, 16, lengths)


def tell_both(archive, mutation, extrapolation, genomes, fitness, generation):
    """What the engine does after scoring: the archive takes the batch, then each emitter its rows."""
    images = torch.zeros(len(genomes), 3, 16, 16, dtype=torch.uint8)
    archive.update(genomes, images, fitness, generation)
    mutation.tell(archive, genomes, images, fitness, np.random.default_rng(9))
    extrapolation.tell(archive, [], images[:0], fitness[:0], np.random.default_rng(9))


def test_extrapolation_continues_the_step_of_a_same_graph_child_that_took_its_parents_cell():
    enc, archive, mutation, extra = extrapolation_setup()
    assert extra.batch_size == 0 and extra.ask(archive, 0, np.random.default_rng(1), 2) == []
    children = mutation.ask(archive, 6, np.random.default_rng(1), 2)
    classes, parents = mutation._asked
    assert all(enc.same_graph(p, c) for p, c in zip(parents, children))
    fitness = torch.full((6, 4), -9.0, dtype=torch.float64)
    fitness[0, classes[0]] = -2.5                       # takes its parent's cell
    other = (classes[1] + 1) % 4
    fitness[1, other] = -2.9 if other != classes[0] else -9.0  # takes another class's cell: not its own step
    tell_both(archive, mutation, extra, children, fitness, 2)
    assert extra.batch_size == 2 and list(extra.classes) == [classes[0]] * 2
    proposals = extra.ask(archive, 2, np.random.default_rng(1), 3)
    step = children[0].link_weight.astype(np.float64) - parents[0].link_weight.astype(np.float64)
    for s, proposal in zip((0.5, 2.0), proposals):
        assert enc.same_graph(proposal, children[0]) and proposal.parent == children[0].gid
        want = np.clip(children[0].link_weight + s * step, -enc.weight_bound, enc.weight_bound).astype(np.float32)
        assert np.array_equal(proposal.link_weight, want)
    # Asking again without a tell gives the same proposals; a wrong count is refused.
    assert extra.ask(archive, 2, np.random.default_rng(5), 3) is proposals
    with pytest.raises(ValueError, match="2 proposals are waiting"):
        extra.ask(archive, 3, np.random.default_rng(1), 3)


def test_an_extrapolation_that_wins_goes_on_along_its_own_step_and_one_that_loses_stops():
    enc, archive, mutation, extra = extrapolation_setup()
    extra.ask(archive, 0, np.random.default_rng(1), 2)  # the engine asks every emitter, for 0 too
    children = mutation.ask(archive, 4, np.random.default_rng(1), 2)
    classes, _ = mutation._asked
    fitness = torch.full((4, 4), -9.0, dtype=torch.float64)
    fitness[0, classes[0]] = -2.5
    tell_both(archive, mutation, extra, children, fitness, 2)
    proposals = extra.ask(archive, 2, np.random.default_rng(1), 3)
    before = archive.genomes[classes[0]]
    mutation.ask(archive, 0, np.random.default_rng(1), 3)  # the rest of the batch: nothing
    # The longer proposal takes the cell; no mutation child this time.
    fitness = torch.full((2, 4), -9.0, dtype=torch.float64)
    fitness[1, classes[0]] = -2.0
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    archive.update(proposals, images, fitness, 3)
    mutation.tell(archive, [], images[:0], fitness[:0], np.random.default_rng(9))
    extra.tell(archive, proposals, images, fitness, np.random.default_rng(9))
    assert archive.genomes[classes[0]] is proposals[1]
    winner_step = proposals[1].link_weight.astype(np.float64) - before.link_weight.astype(np.float64)
    again = extra.ask(archive, 2, np.random.default_rng(1), 4)
    for s, proposal in zip((0.5, 2.0), again):
        want = np.clip(proposals[1].link_weight + s * winner_step, -enc.weight_bound,
                       enc.weight_bound).astype(np.float32)
        assert np.allclose(proposal.link_weight, want, atol=1e-6) and proposal.parent == proposals[1].gid
    # Nothing wins the next time: nothing waits after it.
    mutation.ask(archive, 0, np.random.default_rng(1), 4)
    fitness = torch.full((2, 4), -9.0, dtype=torch.float64)
    archive.update(again, images, fitness, 4)
    mutation.tell(archive, [], images[:0], fitness[:0], np.random.default_rng(9))
    extra.tell(archive, again, images, fitness, np.random.default_rng(9))
    assert extra.batch_size == 0 and extra.pending is None


def test_extrapolation_ignores_children_whose_graph_changed_and_caps_its_share():
    from evofool.emitters import ExtrapolationEmitter
    enc, archive, _, _ = extrapolation_setup()
    structural = MutationEmitter(cppn(p_add_node=1.0), UniformSelector())  # every child gains a node
    extra = ExtrapolationEmitter(enc, structural, 16, (1.0,))
    extra.ask(archive, 0, np.random.default_rng(1), 2)
    children = structural.ask(archive, 4, np.random.default_rng(1), 2)
    fitness = torch.diag(torch.full((4,), 2.0, dtype=torch.float64))[structural._asked[0]] - 2.5
    tell_both(archive, structural, extra, children, fitness, 2)
    assert archive.generation.eq(2).any() and extra.batch_size == 0
    # A quarter of a population of 4 is one place: one class proposes, the first in line.
    enc, archive, mutation, _ = extrapolation_setup()
    extra = ExtrapolationEmitter(enc, mutation, 4, (1.0,))
    extra.ask(archive, 0, np.random.default_rng(1), 2)
    children = mutation.ask(archive, 8, np.random.default_rng(3), 2)
    classes = mutation._asked[0]
    fitness = torch.full((8, 4), -9.0, dtype=torch.float64)
    fitness[np.arange(8), classes] = -2.0
    tell_both(archive, mutation, extra, children, fitness, 2)
    assert extra.batch_size == 1 and extra.classes[0] == classes[0]
    # A class whose new champion is fooled (>= focus_below) proposes nothing.
    enc, archive, mutation, extra = extrapolation_setup()
    extra.ask(archive, 0, np.random.default_rng(1), 2)
    children = mutation.ask(archive, 2, np.random.default_rng(3), 2)
    classes = mutation._asked[0]
    fitness = torch.full((2, 4), -9.0, dtype=torch.float64)
    fitness[0, classes[0]] = np.log(0.99995)
    tell_both(archive, mutation, extra, children, fitness, 2)
    assert archive.confidences()[classes[0]] > extra.focus_below and extra.batch_size == 0
    with pytest.raises(ValueError, match="networks"):
        ExtrapolationEmitter(direct(), MutationEmitter(direct()), 16)


def test_parse_lengths_reads_off_on_and_lists():
    from evofool.emitters import DEFAULT_LENGTHS, parse_lengths
    assert parse_lengths("off") == () and parse_lengths(" OFF ") == () and parse_lengths(None) == ()
    assert parse_lengths("on") == DEFAULT_LENGTHS
    assert parse_lengths("0.5, 3") == (0.5, 3.0) and parse_lengths([1, 2.5]) == (1.0, 2.5)
    for bad in ("0,1", "-1", "nan", "1,inf", [0], ["1"], [True], "up", 3):
        with pytest.raises(ValueError, match="extrapolate"):
            parse_lengths(bad)
