"""BatchEvaluator: chunking is invisible, uint8 == float input, shape errors are clear."""

from __future__ import annotations

import warnings

import pytest
import torch

from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.models import load_model


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet-mnist")


@pytest.mark.parametrize("n", [0, 1, 3, 7, 23])
def test_matches_plain_softmax_for_any_batch_size(lenet, n):
    gen = torch.Generator().manual_seed(n)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    with torch.inference_mode():
        expected = torch.softmax(lenet.module(images.float() / 255.0).double(), dim=1)
    scores = BatchEvaluator(lenet, device="cpu", max_batch=7).evaluate(images)
    assert scores.probs.shape == (n, 10) and scores.log_probs.shape == (n, 10)
    torch.testing.assert_close(scores.probs, expected, rtol=0, atol=1e-6, check_dtype=False)
    torch.testing.assert_close(scores.log_probs.exp(), scores.probs, rtol=0, atol=0)


def test_chunk_size_does_not_change_results(lenet):
    images = torch.rand(23, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    small = BatchEvaluator(lenet, device="cpu", max_batch=7).evaluate(images).probs
    large = BatchEvaluator(lenet, device="cpu", max_batch=1024).evaluate(images).probs
    # Probabilities, not log-probabilities: float32 convolutions at other batch sizes round
    # logits of size ~10 differently by ~1e-6, and log-probabilities carry that error whole.
    torch.testing.assert_close(small, large, rtol=0, atol=1e-6)


def test_uint8_and_float_inputs_agree(lenet):
    images = torch.randint(0, 256, (9, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    ev = BatchEvaluator(lenet, device="cpu", max_batch=4)
    torch.testing.assert_close(ev.log_probs(images), ev.log_probs(images.float() / 255.0),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 1, 32, 32), (1, 28, 28), (28, 28)])
def test_wrong_shape_is_a_user_error(lenet, shape):
    with pytest.raises(EvofoolError, match=r"do not fit model lenet-mnist"):
        BatchEvaluator(lenet, device="cpu").evaluate(torch.zeros(shape))


def test_max_batch_must_be_positive(lenet):
    with pytest.raises(ValueError):
        BatchEvaluator(lenet, device="cpu", max_batch=0)


def test_bfloat16_autocast_keeps_the_ranking_and_float64_fitness(lenet):
    images = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    full = BatchEvaluator(lenet, "cpu").log_probs(images)
    half = BatchEvaluator(lenet, "cpu", precision="bfloat16").log_probs(images)
    assert BatchEvaluator(lenet, "cpu").precision == "float32"  # auto on CPU: exact float32
    assert half.dtype == torch.float64 and half.shape == full.shape
    # Noise images often have near-tied top classes, which bfloat16 may swap.
    assert (half.argmax(1) == full.argmax(1)).float().mean() >= 0.9
    assert (half.exp() - full.exp()).abs().max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        BatchEvaluator(lenet, "cpu", precision="int8")


def test_out_of_memory_halves_the_chunk_and_keeps_results(lenet):
    """A chunk that does not fit is retried in halves; the smaller size is remembered."""
    real = lenet.module
    seen = []

    class FitsOnly100(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            if x.shape[0] > 100:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(x)

    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    expected = BatchEvaluator(lenet, "cpu").log_probs(images)
    limited = BatchEvaluator(type(lenet)(lenet.spec, FitsOnly100(), lenet.input_shape, lenet.class_names,
                                         preprocess=lenet.preprocess), "cpu", max_batch=1024)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = limited.log_probs(images)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "chunks of 150" in messages[0] and "chunks of 75" in messages[1]
    assert limited.max_batch == 75 and seen == [300, 150, 75, 75, 75, 75]
    assert torch.allclose(got, expected)


def test_scores_are_bit_identical_whatever_the_batch_split_or_thread_count(lenet):
    """Resume, Ray sub-batches and re-scoring rely on it (evofool/__init__.py sets MKL's CNR mode)."""
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    evaluator = BatchEvaluator(lenet, device="cpu")
    whole = evaluator.log_probs(images)
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for n in (1, 10, 50, 100, 299):
                assert torch.equal(evaluator.log_probs(images[:n]), whole[:n]), (n_threads, n)
    finally:
        torch.set_num_threads(threads)
