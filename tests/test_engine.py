"""The generation loop on a real (small) model: ask/tell, records, scorer, state."""

import numpy as np
import pytest
import torch
from torch import nn

from evofool.archive import ClassArchive
from evofool.encodings.direct import DirectEncoding
from evofool.engine import Engine, sample_parents
from evofool.evaluator import BatchEvaluator
from evofool.models.base import Classifier


def tiny_classifier(k=4) -> Classifier:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(1 * 6 * 6, k))
    return Classifier("tiny", module, (1, 6, 6), [f"c{i}" for i in range(k)])


def make_engine(seed=0, population=16, scorer=None) -> Engine:
    clf = tiny_classifier()
    enc = DirectEncoding(clf.input_shape)
    return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(clf.num_classes, enc), population,
                  np.random.default_rng(seed), scorer=scorer)


def test_first_generation_is_random_then_children_of_champions():
    engine = make_engine()
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
    for _ in range(5):
        rec = engine.step()
    conf = engine.archive.confidences()
    assert np.isclose(rec["median"], np.median(conf)) and np.isclose(rec["max"], conf.max())
    assert rec["n99"] == int((conf >= 0.99).sum())
    assert len(engine.logbook) == 5 and engine.logbook.select("generation") == [1, 2, 3, 4, 5]


def test_sample_parents_is_uniform_over_occupied_cells():
    engine = make_engine()
    engine.archive.log_probs[:] = torch.tensor([-1.0, -torch.inf, -2.0, -torch.inf], dtype=torch.float64)
    picks = sample_parents(engine.archive, 20_000, np.random.default_rng(0))
    assert set(np.unique(picks)) == {0, 2}
    assert abs(np.mean(picks == 0) - 0.5) < 0.02


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
    for _ in range(3):
        a.step()
        b.step()
    assert torch.equal(a.archive.images, b.archive.images)
    assert torch.equal(a.archive.log_probs, b.archive.log_probs)
    assert a.generation == b.generation == 6


def test_lagging_selection_gives_three_quarters_to_lagging_cells_and_keeps_a_uniform_share():
    from evofool.engine import LAGGING_UNIFORM_SHARE

    engine = make_engine()
    engine.step()
    archive = engine.archive
    # Cells 0 and 1 fooled (log p = 0 → confidence 1), 2 and 3 lagging.
    archive.log_probs[:] = torch.tensor([0.0, 0.0, -1.0, -2.0], dtype=archive.log_probs.dtype)
    n = 4000
    parents = sample_parents(archive, n, np.random.default_rng(1), selection="lagging", focus_below=0.9999)
    n_all = int(round(LAGGING_UNIFORM_SHARE * n))
    assert np.isin(parents[:n - n_all], [2, 3]).all()           # the lagging part
    counts = np.bincount(parents[n - n_all:], minlength=4)      # the uniform part: every cell
    assert counts.min() > 0.2 * n_all and counts.max() < 0.3 * n_all
    # Once every cell is above the threshold, all parents are uniform over all cells.
    archive.log_probs[:] = 0.0
    counts = np.bincount(sample_parents(archive, n, np.random.default_rng(2), selection="lagging"), minlength=4)
    assert counts.min() > 0.2 * n


def test_quantile_equals_numpy():
    from evofool.engine import make_statistics, sorted_quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1000):
        values = rng.random(n)
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert sorted_quantile(np.sort(values), q) == pytest.approx(float(np.quantile(values, q)), abs=1e-15)
        record = make_statistics().compile([values])
        assert record["min"] == values.min() and record["max"] == values.max()
        assert record["q1"] == pytest.approx(float(np.quantile(values, 0.25)), abs=1e-15)
        assert record["median"] == pytest.approx(float(np.median(values)), abs=1e-15)
