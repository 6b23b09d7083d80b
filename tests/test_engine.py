"""The generation loop on a real (small) model: ask/tell, records, scorer, state."""

import numpy as np
import pytest
import torch
from torch import nn

from evofool.archive import ClassArchive
from evofool.encodings.direct import DirectEncoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator
from evofool.models.base import Classifier


def tiny_classifier(k=4) -> Classifier:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(1 * 6 * 6, k))
    return Classifier("tiny", module, (1, 6, 6), [f"c{i}" for i in range(k)])


def make_engine(seed=0, population=16, scorer=None, recombination=None, **params) -> Engine:
    clf = tiny_classifier()
    enc = DirectEncoding(clf.input_shape, **params)
    return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(clf.num_classes, enc), population,
                  np.random.default_rng(seed), scorer=scorer, recombination=recombination)


def assert_same_future(a: Engine, b: Engine, steps: int = 3) -> None:
    """``a`` and ``b`` (``b`` restored from ``a``'s state) step to identical archives."""
    for _ in range(steps):
        a.step()
        b.step()
    assert torch.equal(a.archive.images, b.archive.images)
    assert torch.equal(a.archive.fitness, b.archive.fitness)


def test_first_generation_is_random_then_children_of_champions():
    engine = make_engine(mutation="polynomial", init="noise")  # the paper's: few pixels a child
    rec = engine.step()
    assert rec["generation"] == 1 and rec["evaluations"] == 16
    assert len(engine.archive.occupied) == 4  # every class has some best image
    children = engine.ask()
    # Each child differs from some champion in only a few pixels (10 % mutation rate).
    champs = engine.archive.images.view(4, -1).int()
    diffs = (children.view(16, 1, -1).int() != champs.view(1, 4, -1)).float().mean(-1).min(-1).values
    assert torch.all(diffs < 0.4)  # ~10 % of 36 pixels mutated; unrelated images differ in ~99 %


def test_records_hold_statistics_over_champions():
    engine = make_engine()
    records = [engine.step() for _ in range(5)]
    rec = records[-1]
    conf = engine.archive.confidences()
    assert np.isclose(rec["median"], np.median(conf)) and np.isclose(rec["max"], conf.max())
    assert rec["n99"] == int((conf >= 0.99).sum())
    assert [r["generation"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["evaluations"] for r in records] == [16, 32, 48, 64, 80]
    # The keys (and their order) of every log record.
    assert list(rec) == ["generation", "evaluations", "improved", "min", "q1", "median", "q3", "max",
                         "n99", "n9999", "evals_per_s", "seconds"]


def test_a_custom_scorer_is_used_and_must_match_local_scoring():
    calls = []
    base = make_engine(seed=3)

    def scorer(genomes):
        calls.append(len(genomes))
        return base.score_locally(genomes)

    engine = make_engine(seed=3, scorer=scorer)
    for _ in range(4):
        engine.step()
        base.step()
    assert calls == [16] * 4
    assert torch.equal(engine.archive.log_probs, base.archive.log_probs)


def test_state_dict_restores_an_identical_future():
    a = make_engine(seed=5)
    for _ in range(3):
        a.step()
    state, arrays = a.state_dict()
    b = make_engine(seed=99)
    b.load_state_dict(state, arrays)
    assert_same_future(a, b)
    assert a.generation == b.generation == 6


def recombining_engine(seed: int) -> Engine:
    from evofool.emitters import StepRecombination

    return make_engine(seed, recombination=StepRecombination(scales=(2.0, 4.0)))


def test_a_checkpoint_from_before_emitters_still_resumes_exactly():
    """Run folders started before the emitter refactor: their state had ``pending.*`` proposals."""
    a = recombining_engine(seed=5)
    for _ in range(4):
        a.step()
    state, arrays = a.state_dict()
    assert any(k.startswith("emitters.1.pending.") for k in arrays)  # proposals are waiting
    old_state = {k: v for k, v in state.items() if k != "emitters"}
    old_arrays = {k.replace("emitters.1.", ""): v for k, v in arrays.items()}
    b = recombining_engine(seed=99)
    b.load_state_dict(old_state, old_arrays)
    assert_same_future(a, b)
    with pytest.raises(ValueError, match="no step recombination"):
        make_engine().load_state_dict(old_state, old_arrays)


def test_default_emitters_follow_the_constructor_arguments():
    from evofool.emitters import LaggingSelector, MutationEmitter, StepRecombination, StepRecombinationEmitter

    engine = make_engine()
    assert [type(e) for e in engine.emitters] == [MutationEmitter] and engine.recombination is None
    clf = tiny_classifier()
    enc = DirectEncoding(clf.input_shape)
    rec = StepRecombination(scales=(2.0,))
    engine = Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(4, enc), 16, np.random.default_rng(0),
                    selection="lagging", focus_below=0.5, recombination=rec)
    mutation, recombination = engine.emitters
    assert isinstance(mutation.selector, LaggingSelector) and mutation.selector.focus_below == 0.5
    assert isinstance(recombination, StepRecombinationEmitter) and recombination.source is mutation
    assert engine.recombination is rec and recombination.population == 16
    assert engine.config()["emitters"][1] == {"type": "step_recombination", **rec.config()}
    with pytest.raises(ValueError, match="unknown selection"):
        Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(4, enc), 16, np.random.default_rng(0),
               selection="best")


def test_quantile_equals_numpy():
    from evofool.engine import champion_statistics, sorted_quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1000):
        values = rng.random(n)
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert sorted_quantile(np.sort(values), q) == pytest.approx(float(np.quantile(values, q)), abs=1e-15)
        record = champion_statistics(values)
        assert record["min"] == values.min() and record["max"] == values.max()
        assert record["q1"] == pytest.approx(float(np.quantile(values, 0.25)), abs=1e-15)
        assert record["median"] == pytest.approx(float(np.median(values)), abs=1e-15)
        assert record["q3"] == pytest.approx(float(np.quantile(values, 0.75)), abs=1e-15)
        assert record["n99"] == int(np.count_nonzero(values >= 0.99))
