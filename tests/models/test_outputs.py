"""What a classifier's outputs mean: fitness (plain and differentiable), probabilities, fitness kinds."""

from __future__ import annotations

import math

import pytest
import torch

from evofool.models.outputs import (fitness_from_outputs, fitness_kind, mean_of_stacked,
                                    probabilities_from_outputs, stable_log_softmax)


def logits() -> torch.Tensor:
    return torch.tensor([[2.0, -1.0, 0.5], [40.0, 0.0, -3.0]])


def test_fitness_of_each_kind_of_output():
    x = logits()
    torch.testing.assert_close(fitness_from_outputs(x, "logits"), torch.log_softmax(x.double(), 1))
    probs = torch.softmax(x.double(), 1)
    torch.testing.assert_close(fitness_from_outputs(probs, "probs"), probs.log())
    assert torch.equal(fitness_from_outputs(x, "scores"), x.double())
    assert fitness_from_outputs(torch.zeros(1, 2), "probs").min() == math.log(1e-300)  # never log(0)


def test_stable_log_softmax_resolves_near_certain_classes():
    top = stable_log_softmax(torch.tensor([[60.0, 0.0]]))[0, 0].item()
    assert top < 0 and top == pytest.approx(-math.exp(-60), rel=1e-12)
    assert torch.log_softmax(torch.tensor([[60.0, 0.0]], dtype=torch.float64), 1)[0, 0].item() == 0.0


@pytest.mark.parametrize("outputs", ["logits", "probs", "scores"])
def test_the_differentiable_fitness_has_a_gradient(outputs):
    raw = logits() if outputs != "probs" else torch.softmax(logits(), 1)
    raw = raw.clone().requires_grad_(True)
    fitness = fitness_from_outputs(raw, outputs, differentiable=True)
    torch.testing.assert_close(fitness.detach(), fitness_from_outputs(raw.detach(), outputs))
    (grad,) = torch.autograd.grad(fitness[:, 0].sum(), raw)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_probabilities():
    x = logits()
    torch.testing.assert_close(probabilities_from_outputs(x, "logits"), torch.softmax(x.double(), 1))
    p = torch.softmax(x, 1)
    assert torch.equal(probabilities_from_outputs(p, "probs"), p.double())
    with pytest.raises(ValueError, match="not class probabilities"):
        probabilities_from_outputs(x, "scores")


def test_fitness_kinds():
    assert [fitness_kind(o) for o in ("logits", "probs", "scores")] == ["log_prob", "log_prob", "score"]


@pytest.mark.parametrize("members, classes", [(10, 10), (10, 1000), (3, 10)])
def test_a_rows_mean_of_stacked_scores_does_not_depend_on_the_batch(members, classes):
    """Each row's mean over crops (or ensemble members) has the same bits alone and in a batch
    of any size; ``Tensor.mean(dim=0)`` changed some rows between batch sizes."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(members, 100, classes, dtype=torch.float64, generator=gen).softmax(-1)
    alone = torch.cat([mean_of_stacked(probs[:, i:i + 1]) for i in range(100)])
    for n in (7, 10, 25, 30, 50, 100):
        parts = [mean_of_stacked(probs[:, i:i + n]) for i in range(0, 100, n)]
        assert torch.equal(torch.cat(parts), alone), n
    # Where the batch fills whole vectors (10 crops of 50 ImageNet images) it is Tensor.mean's
    # bits: runs scored before resume exactly.
    if classes == 1000:
        assert torch.equal(mean_of_stacked(probs[:, :50]), probs[:, :50].mean(dim=0))
    torch.testing.assert_close(mean_of_stacked(probs), probs.mean(dim=0), rtol=0, atol=1e-15)


def test_mean_of_stacked_has_a_gradient():
    x = torch.rand(4, 3, 5, dtype=torch.float64, requires_grad=True)
    mean_of_stacked(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.25))
