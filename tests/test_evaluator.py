"""BatchEvaluator: chunking is invisible, uint8 == float input, shape errors are clear."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator, forward_chunk
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

    class FitsOnly30(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            if x.shape[0] > 30:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(x)

    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    expected = BatchEvaluator(lenet, "cpu").log_probs(images)
    limited = BatchEvaluator(type(lenet)(lenet.spec, FitsOnly30(), lenet.input_shape, lenet.class_names,
                                         preprocess=lenet.preprocess), "cpu", max_batch=1024)
    assert limited.chunk == 100  # LeNet's fixed chunk on the CPU
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = limited.log_probs(images)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "chunks of 50" in messages[0] and "chunks of 25" in messages[1]
    # Every pass has the (halved) fixed shape: 60 images = 25 + 25 + 10 padded to 25.
    assert limited.max_batch == 25 and seen == [100, 50, 25, 25, 25]
    assert torch.allclose(got, expected)


def assert_bit_identical_splits(classifier, count: int, sizes) -> None:
    """Scores of ``images[:n]`` and ``images[s:]`` equal those of the whole batch, 1 and 2 threads."""
    images = torch.randint(0, 256, (count, *classifier.input_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = BatchEvaluator(classifier, device="cpu").log_probs(images)
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            evaluator = BatchEvaluator(classifier, device="cpu")  # as a Ray worker or transfer builds it
            for n in sizes:
                assert torch.equal(evaluator.log_probs(images[:n]), whole[:n]), (n_threads, n)
            # Another position in the chunk, other neighbours: the same bits.
            assert torch.equal(evaluator.log_probs(images[7:]), whole[7:]), (n_threads, "shifted by 7")
    finally:
        torch.set_num_threads(threads)


def test_scores_are_bit_identical_whatever_the_batch_split_or_thread_count(lenet):
    """Resume, Ray sub-batches and re-scoring rely on it: fixed-shape chunks (any CPU model)."""
    assert_bit_identical_splits(lenet, 300, (1, 2, 10, 50, 99, 100, 101, 150, 299, 300))


def test_photo_model_scores_are_bit_identical_whatever_the_batch_split():
    """EfficientNet-Lite0 (oneDNN convolutions chosen by shape) through its 50-image chunks."""
    from run_helpers import require_imagenet_packages

    require_imagenet_packages()
    assert_bit_identical_splits(load_model("efficientnet-lite0"), 57, (1, 9, 50, 56))


def test_forward_chunk_is_fixed_per_model_and_capped_by_max_batch():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert forward_chunk((1, 28, 28), cpu) == 100
    assert forward_chunk((3, 224, 224), cpu) == 50
    assert forward_chunk((3, 224, 224), cuda) == 200
    assert forward_chunk((1, 28, 28), cpu, max_batch=7) == 7


def _classifier_returning(lenet, fn):
    class Odd(torch.nn.Module):
        def forward(self, x):
            return fn(lenet.module(x))

    return type(lenet)("odd-model", Odd(), lenet.input_shape, lenet.class_names, preprocess=lenet.preprocess)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_model_outputs_are_a_user_error_naming_the_model(lenet, value):
    def poison(logits):
        logits = logits.clone()
        logits[3, 2] = value
        return logits

    evaluator = BatchEvaluator(_classifier_returning(lenet, poison), "cpu")
    with pytest.raises(EvofoolError, match=r"model odd-model returned NaN or infinite scores for 1 of 100"):
        evaluator.log_probs(torch.zeros(5, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("fn, shape", [(lambda y: y[:1], "(1, 10)"), (lambda y: y[:, :3], "(100, 3)"),
                                       (lambda y: y.flatten(), "(1000,)")])
def test_wrongly_shaped_model_outputs_are_a_user_error(lenet, fn, shape):
    """A model whose output only fits batch 1 fails at once (every chunk has 100 images)."""
    evaluator = BatchEvaluator(_classifier_returning(lenet, fn), "cpu")
    with pytest.raises(EvofoolError, match=rf"returned shape {re.escape(shape)} for a batch of 100"):
        evaluator.log_probs(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


def test_a_graph_replaces_the_torch_forward_and_is_recorded(lenet):
    """``use_graph``: the exported scoring function gets exactly one chunk per call (its static shape)."""
    evaluator = BatchEvaluator(lenet, "cpu")
    assert evaluator.record() == {"runtime": "torch", "chunk": 100, "precision": "float32"}
    images = torch.randint(0, 256, (130, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    expected = evaluator.log_probs(images)
    seen = []

    def graph(chunk):
        seen.append(tuple(chunk.shape))
        return lenet.module(lenet.preprocess(chunk))

    evaluator.use_graph(graph)
    assert evaluator.runtime == "onnxruntime"
    assert torch.equal(evaluator.log_probs(images), expected) and seen == [(100, 1, 28, 28)] * 2
    evaluator.use_graph(None)
    assert evaluator.runtime == "torch" and evaluator.graph is None


def test_probe_images_are_one_fixed_chunk(lenet):
    evaluator = BatchEvaluator(lenet, "cpu", max_batch=30)
    a, b = evaluator.probe_images(), evaluator.probe_images()
    assert a.shape == (30, 1, 28, 28) and a.dtype == torch.uint8 and torch.equal(a, b)


def test_onnxruntime_scores_photo_models_in_chunks_of_10_on_the_cpu():
    cpu = torch.device("cpu")
    assert forward_chunk((3, 224, 224), cpu, runtime="onnxruntime") == 10
    assert forward_chunk((1, 28, 28), cpu, runtime="onnxruntime") == 100
    assert forward_chunk((3, 224, 224), torch.device("cuda"), runtime="onnxruntime") == 200
