"""What a classifier's raw outputs mean: the one place that turns them into fitness or probabilities.

``Classifier.outputs`` says what its module returns:

* ``logits`` — class scores before the softmax (most models);
* ``probs`` — class probabilities already (ensembles, ``first:``, 10-crop means);
* ``scores`` — raw unit activations (``unit:`` specs): no classes, no probabilities.

The fitness a run compares is a class's float64 log-probability, or for ``scores`` the
activation itself; ``fitness_kind`` names which (``ClassArchive.fitness_kind``).

This module sits with the models (it imports only torch), so the wrappers in
``evofool.models`` use it without importing the evaluator above them.
"""

from __future__ import annotations

import torch

LOGITS, PROBS, SCORES = "logits", "probs", "scores"
# Fitness kinds: what a run's fitness values (and so its reports) are.
LOG_PROB, SCORE = "log_prob", "score"
FITNESS_KINDS = (LOG_PROB, SCORE)
# log(0) is never taken: a probability that rounded to 0 counts as this.
PROB_FLOOR = 1e-300


def fitness_kind(outputs: str) -> str:
    """``score`` for raw unit activations, else ``log_prob``."""
    return SCORE if outputs == SCORES else LOG_PROB


def stable_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax in float64 that stays informative for near-certain classes.

    For the top class, ``log p = -log1p(sum_{j != top} exp(x_j - x_top))``: plain
    log-softmax rounds to exactly 0 once the logit gap passes ~37 (float64) or ~17
    (float32), after which champions could no longer improve. This form keeps
    resolving differences until the gap reaches ~700. It works in place: no gradient.
    """
    x = logits.to(torch.float64)
    top_value, top = x.max(dim=1, keepdim=True)
    shifted = x - top_value                      # log-sum-exp, shifted by the top logit
    rest = shifted.exp().scatter_(1, top, 0.0).sum(dim=1, keepdim=True)
    # log Σ_j exp(shifted_j) = log(1 + rest): log1p keeps the top class's -rest exact.
    return shifted.sub_(torch.log1p(rest))


def fitness_from_outputs(raw: torch.Tensor, outputs: str, differentiable: bool = False) -> torch.Tensor:
    """A model's raw outputs as float64 fitness: log-probabilities, or raw unit scores.

    Args:
        raw: ``N×K`` outputs of the module.
        outputs: What the classifier declares (``logits``, ``probs`` or ``scores``).
        differentiable: Keep the autograd graph (gradient ascent, L-BFGS): logits then go
            through float64 ``log_softmax``, whose gradient is exact near probability 1;
            otherwise through ``stable_log_softmax``, which resolves log-probabilities
            closer to 0 but works in place.
    """
    if outputs == SCORES:
        return raw.to(torch.float64)
    if outputs == PROBS:
        return torch.log(raw.to(torch.float64).clamp_min(PROB_FLOOR))
    if differentiable:
        return torch.log_softmax(raw.to(torch.float64), dim=1)
    return stable_log_softmax(raw.float())


def mean_of_stacked(stacked: torch.Tensor) -> torch.Tensor:
    """The mean over dim 0 of ``M×N×...`` (crops or ensemble members), added one slice after
    the other, so that a row's bits do not depend on how many rows ``N`` the batch has.

    ``Tensor.mean(dim=0)`` does not promise that: on the CPU its loop over the ``N×...``
    elements below dim 0 rounds the elements past the last full vector differently, so
    (AMD EPYC Zen 4, float64, 10 crops × N × 10 classes) 2-9 of 100 rows changed between
    chunks of 10, 25, 30 and 50 images. Where that loop has no such elements (``N×...`` a
    multiple of 16 here: 10 crops of 50 ImageNet images) both give the same bits, so runs
    scored with ``mean`` resume exactly. An ONNX export keeps ``ReduceMean`` (ONNX Runtime
    gave the same bits at every chunk; exports cached before this stay valid).
    """
    if torch.onnx.is_in_onnx_export():
        return stacked.mean(dim=0)
    total = stacked[0].clone()
    for part in stacked[1:]:
        total = total + part  # out of place: gradients flow through (ascent, perturb)
    return total / stacked.shape[0]


def probabilities_from_outputs(raw: torch.Tensor, outputs: str) -> torch.Tensor:
    """A classifier's raw outputs as float64 class probabilities (differentiable).

    float64: a mean of members near ``1 - 1e-9`` must not round to exactly 1.

    Raises:
        ValueError: ``scores`` (unit activations are not probabilities; callers refuse
            such models with their own message first).
    """
    if outputs == SCORES:
        raise ValueError("raw unit scores are not class probabilities")
    raw = raw.to(torch.float64)
    return raw if outputs == PROBS else torch.softmax(raw, dim=1)


__all__ = ["FITNESS_KINDS", "LOGITS", "LOG_PROB", "PROBS", "PROB_FLOOR", "SCORE", "SCORES", "fitness_from_outputs",
           "fitness_kind", "probabilities_from_outputs", "stable_log_softmax"]
