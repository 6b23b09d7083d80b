"""ClassArchive: vectorised multi-cell updates, fitness of both kinds, saved arrays."""

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.encodings.direct import DirectEncoding


def _archive(k=5):
    enc = DirectEncoding((1, 4, 4))
    return ClassArchive(k, enc), enc


def _logp(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_one_image_beating_three_champions_takes_all_three_cells():
    archive, enc = _archive(5)
    first = torch.full((2, 1, 4, 4), 10, dtype=torch.uint8)
    first[1] = 20
    archive.update(first, first, _logp([[0.4, 0.3, 0.1, 0.1, 0.1], [0.1, 0.1, 0.25, 0.2, 0.35]]), generation=1)
    before = archive.fitness.clone()
    # The new image beats classes 0, 2 and 3 and loses on 1 and 4.
    star = torch.full((1, 1, 4, 4), 99, dtype=torch.uint8)
    changed = archive.update(star, star, _logp([[0.42, 0.02, 0.26, 0.25, 0.05]]), generation=2)
    assert list(changed) == [0, 2, 3]
    for k in (0, 2, 3):
        assert torch.all(archive.images[k] == 99) and torch.all(archive.genomes[k] == 99)
        assert archive.generation[k] == 2
    for k in (1, 4):
        assert archive.fitness[k] == before[k] and archive.generation[k] == 1
    assert torch.all(archive.images[1] == 10)
    assert torch.all(archive.images[4] == 20)


def test_image_beating_no_champion_changes_nothing():
    archive, enc = _archive(3)
    x = torch.full((1, 1, 4, 4), 5, dtype=torch.uint8)
    archive.update(x, x, _logp([[0.5, 0.3, 0.2]]), 1)
    state = (archive.fitness.clone(), archive.images.clone(), archive.generation.clone(), archive.genomes.clone())
    y = torch.full((2, 1, 4, 4), 7, dtype=torch.uint8)
    changed = archive.update(y, y, _logp([[0.5, 0.3, 0.2], [0.4, 0.2, 0.1]]), 2)  # ties keep the old one
    assert len(changed) == 0
    for a, b in zip(state, (archive.fitness, archive.images, archive.generation, archive.genomes)):
        assert torch.equal(a, b)


def test_best_of_batch_wins_each_cell_and_empty_cells_stay_empty():
    archive, _ = _archive(4)
    x = torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    lp = _logp([[0.7, 0.1, 0.1, 0.1], [0.1, 0.8, 0.05, 0.05], [0.2, 0.2, 0.3, 0.3]])
    lp[:, 3] = -torch.inf  # nobody scores class 3
    archive.update(x, x, lp, 1)
    assert list(archive.occupied) == [0, 1, 2]
    assert [int(archive.images[k, 0, 0, 0]) for k in range(3)] == [0, 1, 2]
    assert archive.confidences()[3] == 0.0


def test_arrays_round_trip_bit_for_bit():
    archive, enc = _archive(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=g)
    archive.update(x, x, torch.log_softmax(torch.randn(6, 4, generator=g, dtype=torch.float64), 1), 3)
    copy = ClassArchive(4, enc)
    copy.load_arrays(archive.arrays())
    for name in ("fitness", "images", "generation", "genomes"):
        assert torch.equal(getattr(copy, name), getattr(archive, name))
    np.testing.assert_array_equal(copy.occupied, archive.occupied)


def test_a_score_archive_reports_its_scores_and_a_log_prob_archive_probabilities():
    enc = DirectEncoding((1, 4, 4))
    x = torch.full((1, 1, 4, 4), 3, dtype=torch.uint8)
    scores = torch.tensor([[12.5, -0.25, -torch.inf]], dtype=torch.float64)
    units = ClassArchive(3, enc, fitness_kind="score")
    units.update(x, x, scores, 1)
    assert units.fitness_kind == "score" and not units.is_probability
    np.testing.assert_array_equal(units.confidences(), [12.5, -0.25, -np.inf])  # as they are
    classes = ClassArchive(3, enc)
    classes.update(x, x, _logp([[0.5, 0.3, 0.2]]), 1)
    assert classes.is_probability
    np.testing.assert_allclose(classes.confidences(), [0.5, 0.3, 0.2], rtol=1e-15)
    with np.testing.assert_raises(ValueError):
        ClassArchive(3, enc, fitness_kind="probability")


def test_old_names_still_work():
    """``log_probs`` (the tensor's old name) until its users move; the kind is ``fitness_kind`` only."""
    enc = DirectEncoding((1, 4, 4))
    archive = ClassArchive(2, enc, fitness_kind="score")
    assert archive.fitness_kind == "score" and archive.log_probs is archive.fitness
    with np.testing.assert_raises(TypeError):
        ClassArchive(2, enc, fitness="score")  # the legacy keyword is gone
    assert "archive.log_probs" in archive.arrays()  # the checkpoint array's name: old checkpoints resume
