"""The CUDA path: bf16 autocast scoring, state kept on the GPU, exact resume, ImageNet runs.

Skipped where no CUDA GPU is visible (CI); ``benchmarks/device/check.sh`` runs them on
a lent GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evofool.config import RunConfig
from evofool.evaluator import BatchEvaluator
from evofool.job import build_engine
from evofool.models import load_model
from resume_helpers import assert_same_result, evofool, model_spec, run_args
from run_helpers import require_imagenet_packages, run_then_export

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def test_auto_precision_is_bfloat16_and_agrees_with_float32(mnist_test):
    images, _ = mnist_test
    batch = images[:2000].unsqueeze(1)
    clf = load_model("lenet-mnist", device="cuda")
    auto = BatchEvaluator(clf, device="cuda")
    assert auto.precision == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    exact = BatchEvaluator(clf, device="cuda", precision="float32")
    low, full = auto.evaluate(batch).probs, exact.evaluate(batch).probs
    assert low.dtype == full.dtype == torch.float64 and low.device.type == "cuda"
    agree = (low.argmax(1) == full.argmax(1)).double().mean().item()
    assert agree >= 0.99, agree
    assert (low - full).abs().max().item() < 0.1
    # The float64 log-softmax still separates near-certain scores after a bf16 forward pass.
    assert (auto.log_probs(batch).max(1).values < 0).all()


def test_direct_run_keeps_genomes_archive_and_images_on_the_gpu():
    engine, _ = build_engine(RunConfig(model="lenet-mnist", encoding="direct", population=64,
                                       device="cuda", seed=3))
    for _ in range(5):
        engine.step()
    archive = engine.archive
    assert archive.genomes.device.type == "cuda"
    assert archive.log_probs.device.type == archive.images.device.type == "cuda"
    assert engine.generation == 5 and len(archive.occupied) == 10
    assert np.all(np.isfinite(archive.confidences()))


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_gpu_run_stopped_and_resumed_ends_identical_to_a_straight_run(tmp_path, encoding):
    model = model_spec(tmp_path)
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = dict(encoding=encoding, population=40, every=3)
    done = evofool(*run_args(model, straight, generations=12, **args), "--device", "cuda")
    assert done.returncode == 0, done.stderr
    first = evofool(*run_args(model, split, generations=6, **args), "--device", "cuda")
    assert first.returncode == 0, first.stderr
    second = evofool("resume", split, "--generations", 12, "--device", "cuda", "--quiet", "--no-gallery")
    assert second.returncode == 0, second.stderr
    assert_same_result(straight, split, 12)


@pytest.mark.parametrize("crops", ["1", "10"])
def test_imagenet_cppn_run_on_the_gpu_and_its_gallery(tmp_path, crops):
    require_imagenet_packages()
    run = tmp_path / "run"
    summary, manifest = run_then_export(run, "--model", "efficientnet-lite0", "--encoding", "cppn",
                                        "--population", "16", "--generations", "3", "--crops", crops,
                                        "--device", "cuda")
    assert summary["generation"] == 3 and summary["evaluations"] == 48 and summary["classes"] == 1000
    assert len(manifest["classes"]) == 1000
    assert len(list((run / "gallery" / "images").glob("*.png"))) == 1000
