"""ONNX Runtime scoring (``evofool.runtime``): cached exports keyed by the weights, exact chunks."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: pip install onnxruntime")
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx: pip install onnx")

from evofool import runtime  # noqa: E402
from evofool.models import load_model  # noqa: E402
from evofool.models.lenet import LeNet, save_lenet  # noqa: E402
from evofool.scoring import build_scoring  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's own export cache (never the user's ~/.cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(runtime.CACHE_ENV, str(folder))
    return folder / "onnx"


# One torch (and so ONNX Runtime) thread (tests/conftest.py): the machine's cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def exports(monkeypatch) -> list:
    """The specs exported so far in this test (``export_onnx`` counted)."""
    calls = []
    real = runtime.export_onnx

    def counted(classifier, chunk, path):
        calls.append(classifier.spec)
        real(classifier, chunk, path)

    monkeypatch.setattr(runtime, "export_onnx", counted)
    return calls


def images(n: int, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def torch_log_probs(spec: str, x: torch.Tensor, crops: int = 1) -> torch.Tensor:
    _, evaluator = build_scoring(spec, device="cpu", crops=crops, runtime="torch", probe=False)
    return evaluator.log_probs(x)


def saved_lenet(path, seed: int) -> str:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        save_lenet(LeNet(), path)
    finally:
        torch.random.set_rng_state(state)
    return f"lenet:{path}"


def test_export_is_cached_and_reused(cache, exports):
    _, first = build_scoring("lenet-mnist", device="cpu")
    assert first.runtime == "onnxruntime" and exports == ["lenet-mnist"]
    (file,) = cache.iterdir()
    assert file.suffix == ".onnx" and file.name.startswith("lenet-mnist-b100-")
    stamp = file.stat().st_mtime_ns
    _, second = build_scoring("lenet-mnist", device="cpu")
    assert second.runtime == "onnxruntime" and exports == ["lenet-mnist"]  # no second export
    assert [p.name for p in cache.iterdir()] == [file.name] and file.stat().st_mtime_ns == stamp
    x = images(37)
    assert torch.equal(first.log_probs(x), second.log_probs(x))


def test_exports_of_other_weights_are_never_used(cache, exports, tmp_path):
    """Two models, or one path whose weights changed: other keys, and each scores as its own torch."""
    a = load_model("lenet-mnist")
    b = load_model("lenet-mnist-b")
    assert runtime.export_key(a, 100) != runtime.export_key(b, 100)
    x = images(50)
    scores = {}
    for spec in ("lenet-mnist", "lenet-mnist-b"):
        _, evaluator = build_scoring(spec, device="cpu")
        assert evaluator.runtime == "onnxruntime"
        scores[spec] = evaluator.log_probs(x)
        assert (scores[spec] - torch_log_probs(spec, x)).abs().max() <= runtime.TOLERANCE
    assert not torch.equal(scores["lenet-mnist"], scores["lenet-mnist-b"])
    assert len(list(cache.iterdir())) == 2

    path = tmp_path / "mine.safetensors"
    spec = saved_lenet(path, seed=1)
    _, old = build_scoring(spec, device="cpu")
    saved_lenet(path, seed=2)  # same spec, same path, other weights
    _, new = build_scoring(spec, device="cpu")
    assert exports.count(spec) == 2 and len(list(cache.iterdir())) == 4
    assert (new.log_probs(x) - torch_log_probs(spec, x)).abs().max() <= runtime.TOLERANCE
    assert not torch.equal(old.log_probs(x), new.log_probs(x))


def test_the_key_covers_settings_outside_the_weights():
    """Preprocessing constants that are not tensors (Normalize's scale) change the key too."""
    from evofool.models.base import Classifier
    from evofool.models.normalize import Normalize

    net = load_model("lenet-mnist").module

    def classifier(scale: float) -> Classifier:
        return Classifier("lenet-mnist", net, (1, 28, 28), [str(i) for i in range(10)],
                          preprocess=Normalize([0.0], [1.0], scale=scale))

    assert runtime.export_key(classifier(1.0), 100) != runtime.export_key(classifier(2.0), 100)
    assert runtime.export_key(classifier(1.0), 100) != runtime.export_key(classifier(1.0), 50)
    assert runtime.export_key(classifier(1.0), 100) == runtime.export_key(classifier(1.0), 100)


def test_onnxruntime_agrees_with_torch_and_is_exact_across_splits_and_threads():
    x = images(300, seed=3)
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "onnxruntime" and evaluator.chunk == 100
    whole = evaluator.log_probs(x)
    assert whole.dtype == torch.float64 and whole.shape == (300, 10)
    assert (whole - torch_log_probs("lenet-mnist", x)).abs().max() <= runtime.TOLERANCE
    for split in (1, 7, 99, 100, 101, 299, 300):
        parts = [evaluator.log_probs(x[i:i + split]) for i in range(0, 300, split)]
        assert torch.equal(torch.cat(parts), whole), f"split {split}"
    _, two = build_scoring("lenet-mnist", device="cpu", threads=2)
    assert torch.get_num_threads() == 2
    assert two.graph.streams == 2  # 2 chunks at once, one thread each
    assert torch.equal(two.log_probs(x), whole)
    assert torch.get_num_threads() == 2  # torch ran on one thread around the forward, then back
    two.graph.streams = 1  # one chunk after the other on the 2-thread session: the same bits
    assert torch.equal(two.log_probs(x), whole)


def test_streams_score_waves_of_chunks_in_order():
    """Chunks go ``streams`` at a time; each result lands in its images' rows, whatever
    finishes first, and a batch of one chunk takes the plain path."""
    _, evaluator = build_scoring("lenet-mnist", device="cpu", threads=3)
    assert evaluator.graph.streams == 3
    x = images(730, seed=4)  # 8 chunks: waves of 3, 3 and 2, the last one padded
    streamed = evaluator.log_probs(x)
    evaluator.graph.streams = 1
    assert torch.equal(streamed, evaluator.log_probs(x))
    assert torch.equal(streamed[:50], evaluator.log_probs(x[:50]))


@pytest.mark.parametrize("spec, crops", [("lenet-mnist", 10), ("ensemble:lenet-mnist,lenet-mnist-b", 1),
                                         ("smooth:gauss=1:lenet-mnist", 1)])
def test_crops_ensembles_and_defences_are_exported_whole(spec, crops):
    """The exported graph is the whole scoring function; probabilities stay float64."""
    _, evaluator = build_scoring(spec, device="cpu", crops=crops)
    assert evaluator.runtime == "onnxruntime"
    x = images(30, evaluator.classifier.input_shape, seed=4)
    with torch.inference_mode():
        raw = evaluator.graph(evaluator._chunk_input(x))
    assert raw.dtype == (torch.float64 if evaluator.classifier.outputs == "probs" else torch.float32)
    assert (evaluator.log_probs(x) - torch_log_probs(spec, x, crops)).abs().max() <= runtime.TOLERANCE


def test_a_damaged_cache_file_is_exported_again(cache, exports):
    build_scoring("lenet-mnist", device="cpu")
    (file,) = cache.iterdir()
    file.write_bytes(b"not an onnx model")
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "onnxruntime" and exports == ["lenet-mnist", "lenet-mnist"]
    assert file.stat().st_size > 1000


def test_a_failed_export_leaves_nothing_in_the_cache(cache, monkeypatch):
    def fails(*args, **kwargs):
        with open(args[2], "wb") as f:  # half a file, then the failure
            f.write(b"\0" * 10)
        raise RuntimeError("Unsupported operator aten::fancy\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fails)
    classifier = load_model("lenet-mnist")
    with pytest.raises(runtime.RuntimeUnavailable, match=r"^lenet-mnist cannot be exported to ONNX "
                                                         r"\(Unsupported operator aten::fancy\)$"):
        runtime.export_onnx(classifier, 100, runtime.export_path(classifier, 100))
    assert not cache.exists() or not any(cache.iterdir())


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "c"))
    assert runtime.cache_root() == tmp_path / "c"
    monkeypatch.delenv(runtime.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_root() == tmp_path / "xdg" / "evofool"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime.cache_root() == type(tmp_path).home() / ".cache" / "evofool"
    assert os.path.basename(runtime.export_path(load_model("lenet-mnist"), 100).parent) == "onnx"


def test_disagreement_names_the_difference():
    a = torch.log_softmax(torch.tensor([[3.0, 1.0], [0.0, 2.0]], dtype=torch.float64), dim=1)
    assert runtime.disagreement(a, a.clone()) is None
    assert runtime.disagreement(a, a + 5e-5) is None
    assert runtime.disagreement(a, a + 2e-4) == ("max |Δ log-prob| 2.0e-04 (at most 1e-04 allowed), "
                                                 "top-1 class differs for 0 of 2 images")
    swapped = a.clone()
    swapped[0] = a[0].flip(0)
    assert runtime.disagreement(a, swapped).endswith("top-1 class differs for 1 of 2 images")


def test_a_photo_model_scores_in_chunks_of_10_exactly_whatever_the_split():
    """EfficientNet-Lite0 on ONNX Runtime: chunk 10 (its fastest), within the tolerance of
    torch, and the same bits for any split of a batch, on 1 or 2 threads."""
    from run_helpers import require_imagenet_packages

    require_imagenet_packages()
    _, evaluator = build_scoring("efficientnet-lite0", device="cpu")
    assert evaluator.record() == {"runtime": "onnxruntime", "chunk": 10, "precision": "float32"}
    x = images(23, (3, 224, 224), seed=6)
    whole = evaluator.log_probs(x)
    assert (whole - torch_log_probs("efficientnet-lite0", x)).abs().max() <= runtime.TOLERANCE
    assert torch.equal(torch.cat([evaluator.log_probs(x[:9]), evaluator.log_probs(x[9:])]), whole)
    _, two = build_scoring("efficientnet-lite0", device="cpu", threads=2)
    assert torch.equal(two.log_probs(x), whole)


def test_cppn_chunks_are_rendered_by_the_streams_that_score_them():
    """With ONNX Runtime streams, each stream renders the chunks it scores (whichever stream
    is free takes the next): the images, scores and archive are those of rendering the
    whole batch and then scoring it."""
    import numpy as np

    from evofool.archive import ClassArchive
    from evofool.encodings import make_encoding
    from evofool.engine import Engine

    _, evaluator = build_scoring("lenet-mnist", device="cpu", threads=3)
    assert evaluator.streams == 3
    engines, renders = [], []
    for per_chunk in (True, False):
        encoding = make_encoding("cppn", (1, 28, 28), "cpu")
        encoding.renders = per_chunk  # False: render the batch, then score it
        calls = []
        real = encoding.render
        encoding.render = lambda genomes, real=real, calls=calls: (calls.append(len(genomes)), real(genomes))[1]
        engines.append(Engine(encoding, evaluator, ClassArchive(10, encoding), 430, np.random.default_rng(5)))
        renders.append(calls)
    records = [[engine.step() for _ in range(3)] for engine in engines]
    assert sorted(renders[0]) == sorted([100, 100, 100, 100, 30] * 3)  # 5 chunks a generation
    assert renders[1] == [430] * 3
    streamed, whole = engines
    assert torch.equal(streamed.archive.fitness, whole.archive.fitness)
    assert torch.equal(streamed.archive.images, whole.archive.images)
    for a, b in zip(*records):
        assert {k: v for k, v in a.items() if k not in ("seconds", "evals_per_s")} == \
               {k: v for k, v in b.items() if k not in ("seconds", "evals_per_s")}


def test_a_stream_meeting_nan_scores_is_one_error():
    """A chunk scored NaN on any stream is the evaluator's one-line error, raised once every
    stream has stopped; the evaluator then scores the next batch as before."""
    from evofool.errors import EvofoolError

    _, evaluator = build_scoring("lenet-mnist", device="cpu", threads=2)
    graph, real = evaluator.graph, evaluator.graph.run_one
    x = images(500, seed=6)
    x[200:300] = 0  # the third chunk: blank images, which this model answers with NaN

    def nan_for_blank_chunks(chunk):
        out = real(chunk)
        return out.fill_(float("nan")) if not chunk.any() else out

    graph.run_one = nan_for_blank_chunks
    with pytest.raises(EvofoolError, match="returned NaN or infinite scores for 100 of 100 images"):
        evaluator.log_probs(x)
    assert evaluator.log_probs(x[:200]).isfinite().all()  # the streams work on after the error
    graph.run_one = real
    streamed = evaluator.log_probs(x)
    graph.streams = 1
    assert torch.equal(streamed, evaluator.log_probs(x))
