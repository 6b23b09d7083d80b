"""Step recombination: the proposals' arithmetic, their caps, and their effect on a real run."""

import json

import numpy as np
import pytest
import torch

from evofool.archive import ClassArchive
from evofool.config import RunConfig
from evofool.encodings.cppn import CPPNEncoding
from evofool.encodings.direct import DirectEncoding
from evofool.engine import Engine
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.job import Job, make_recombination
from evofool.models import load_model
from evofool.emitters import DEFAULT_SCALES, StepRecombination, parse_scales


def test_proposal_is_champion_plus_scaled_log_rank_weighted_mean_of_the_best_steps():
    enc = DirectEncoding((1, 2, 2))
    parents = torch.full((8, 1, 2, 2), 100, dtype=torch.uint8)
    steps = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1) * torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    children = (parents.float() + steps).to(torch.uint8)
    fitness = torch.zeros(8, 3, dtype=torch.float64)
    fitness[:, 1] = torch.tensor([0.0, 5, 1, 7, 2, 3, 4, 6])  # best: child 3, then child 7
    champions = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    champions[1] = 50
    rec = StepRecombination(scales=(1.0, 4.0), top=0.25)
    out = rec.propose(enc, np.full(8, 1), parents, children, fitness, champions, population=200)
    w = np.log(2.5) - np.log([1.0, 2.0])
    w /= w.sum()
    mean_step = w[0] * steps[3] + w[1] * steps[7]
    expected = torch.stack([(50 + s * mean_step).clamp(0, 255).round() for s in (1.0, 4.0)]).to(torch.uint8)
    assert out.dtype == torch.uint8 and torch.equal(out, expected)


def test_small_classes_propose_nothing_and_proposals_are_capped():
    enc = DirectEncoding((1, 2, 2))
    rng = np.random.default_rng(0)
    genomes = torch.randint(0, 256, (40, 1, 2, 2), dtype=torch.uint8)
    fitness = torch.as_tensor(rng.normal(size=(40, 12)))
    champions = torch.zeros(12, 1, 2, 2, dtype=torch.uint8)
    rec = StepRecombination(scales=(2.0, 4.0), min_offspring=4, max_share=0.25)
    few = np.array([0, 0, 0, 1, 1, 1] * 6 + [2, 3, 4, 5])  # classes 0 and 1 have 18 each, others 1
    out = rec.propose(enc, few, genomes, genomes.flip(0), fitness, champions, population=40)
    assert len(out) == 2 * 2  # only classes 0 and 1, two lengths each
    many = np.repeat(np.arange(10), 4)  # ten classes of 4: room for 40 * 0.25 // 2 = 5 of them
    out = rec.propose(enc, many, genomes, genomes.flip(0), fitness, champions, population=40)
    assert len(out) == 5 * 2
    assert rec.propose(enc, many, genomes, genomes, fitness, champions, population=4) is None


def test_parse_scales():
    assert parse_scales("auto") is None and parse_scales(None) is None
    assert parse_scales("off") == () and parse_scales("2, 4") == (2.0, 4.0) and parse_scales([1, 3]) == (1.0, 3.0)
    for bad in ("2,x", "-1", [0], "nan"):
        with pytest.raises(ValueError):
            parse_scales(bad)


def test_the_old_module_still_exports_step_recombination():
    import evofool.recombination as old

    assert old.StepRecombination is StepRecombination and old.parse_scales is parse_scales
    assert old.DEFAULT_SCALES == DEFAULT_SCALES


def test_the_engine_refuses_step_recombination_without_vector_genomes():
    clf = load_model("lenet-mnist")
    enc = CPPNEncoding(clf.input_shape)
    with pytest.raises(ValueError, match="vector genomes"):
        Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(10, enc), 20, np.random.default_rng(0),
               recombination=StepRecombination())


def test_auto_is_on_for_direct_and_off_for_cppn_and_explicit_cppn_is_refused():
    assert make_recombination("auto", DirectEncoding((1, 28, 28))).scales == DEFAULT_SCALES
    assert make_recombination("off", DirectEncoding((1, 28, 28))) is None
    assert make_recombination("auto", CPPNEncoding((1, 28, 28))) is None
    with pytest.raises(EvofoolError, match="vector genomes"):
        make_recombination("2,4", CPPNEncoding((1, 28, 28)))


def lenet_engine(recombination, seed=0):
    clf = load_model("lenet-mnist")
    # The paper's mutation, whose steps recombination was made for (from 83 to 41 generations on
    # MNIST); with the default patterns mutation it is level (13 generations either way).
    enc = DirectEncoding(clf.input_shape, mutation="polynomial", init="noise")
    return Engine(enc, BatchEvaluator(clf, "cpu"), ClassArchive(10, enc), 200, np.random.default_rng(seed),
                  selection="lagging", recombination=recombination)


def test_on_lenet_proposals_fill_the_batch_win_cells_and_speed_up_the_climb():
    with_rec, without = lenet_engine(StepRecombination()), lenet_engine(None)
    won_by_proposal = 0
    for _ in range(25):
        without.step()
        genomes = with_rec.ask()
        assert len(genomes) == 200  # proposals take places, the forward pass stays one population
        recombination = with_rec.emitters[1]
        n_pending = recombination.batch_size
        assert with_rec.shares() == [200 - n_pending, n_pending]  # the mutation emitter fills the rest
        if n_pending:
            assert torch.equal(genomes[-n_pending:], recombination.pending)
        before = with_rec.archive.log_probs.clone()
        images, log_probs = with_rec.score(genomes)
        with_rec.tell(genomes, images, log_probs)
        if n_pending:
            # Classes whose new champion is one of the proposals (the last rows of the batch).
            best_row = log_probs.argmax(0)
            won_by_proposal += int(((best_row >= 200 - n_pending) &
                                    (with_rec.archive.log_probs > before)).sum())
    assert won_by_proposal > 0
    # Same seed, same mutation: the recombined run's worst class is far ahead after 25 generations.
    assert with_rec.archive.log_probs.min() > without.archive.log_probs.min()
    assert np.median(with_rec.archive.confidences()) > np.median(without.archive.confidences())


def test_pending_proposals_survive_state_dict():
    a = lenet_engine(StepRecombination(), seed=4)
    for _ in range(3):
        a.step()
    state, arrays = a.state_dict()
    assert any(k.startswith("emitters.1.pending.") for k in arrays)
    b = lenet_engine(StepRecombination(), seed=77)
    b.load_state_dict(state, arrays)
    assert a.emitters[1].pending is not None and torch.equal(a.emitters[1].pending, b.emitters[1].pending)
    for _ in range(3):
        a.step()
        b.step()
    assert torch.equal(a.archive.images, b.archive.images)


def test_run_folder_records_the_resolved_recombination(tmp_path):
    job = Job.start(RunConfig(generations=1, population=20), tmp_path / "d", progress=False)
    job.run()
    resolved = json.loads((tmp_path / "d" / "config.json").read_text())["recombination_resolved"]
    assert resolved["scales"] == list(DEFAULT_SCALES)
    job = Job.start(RunConfig(encoding="cppn", generations=1, population=20), tmp_path / "c", progress=False)
    job.run()
    assert json.loads((tmp_path / "c" / "config.json").read_text())["recombination_resolved"] is None
