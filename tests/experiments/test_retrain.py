"""``evofool retrain``: fooling images as class n+1, retrain, fool again — on real MNIST."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evofool.experiments.retrain import FOOLING, Harvest
from evofool.imageio import load_image
from evofool.models import load_model
from evofool.train import accuracy
from fault_helpers import invoke, one_line_error

FASHION = Path(os.environ.get("EVOFOOL_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
SLOW = pytest.mark.skipif(os.environ.get("EVOFOOL_SLOW") != "1", reason="slow: set EVOFOOL_SLOW=1 to run")


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--iterations", 1, "--generations", 12, "--population", 50, "--epochs", 1, "--train-subset", 2000,
        "--min-confidence", 0.9, "--images-per-iteration", 40, "--quiet"]


@pytest.fixture(scope="module")
def tiny(mnist_dir, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("retrain") / "exp"
    result = invoke("retrain", "--data", mnist_dir, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_harvest_keeps_distinct_fooling_champions_evenly():
    class Archive:
        images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
        generation = torch.tensor([1, 1, 1])
        conf = np.array([0.5, 0.95, 0.99])

        def confidences(self):
            return self.conf

    archive = Archive()
    job = SimpleNamespace(engine=SimpleNamespace(archive=archive))  # what a checkpoint hook is given
    harvest = Harvest(0.9, (1, 2, 2))
    assert harvest.take(5)["images"].shape == (0, 1, 2, 2)  # nothing harvested yet
    for step in range(5):
        archive.images = archive.images.clone()
        archive.images[2] += 1  # class 2 changes every time, class 1 never
        harvest(job)
    assert harvest.classes == [1, 2, 2, 2, 2, 2] and len(harvest.images) == 6
    kept = harvest.take(3)
    assert kept["images"].shape == (3, 1, 2, 2) and list(kept["classes"]) == [1, 2, 2]
    assert len(harvest.take(100)["images"]) == 6


# --- the experiment end to end ------------------------------------------------------------------
def test_retrain_tiny_end_to_end(tiny, mnist_dir):
    out, result = tiny
    doc = json.loads((out / "retrain.json").read_text())
    rows = doc["iterations"]
    assert [r["dnn"] for r in rows] == ["DNN1", "DNN2"] and [r["classes"] for r in rows] == [10, 11]
    assert doc["settings"]["train_subset"] == 2000 and doc["settings"]["iterations"] == 1

    # DNN2: an 11-class LeNet with a sidecar naming its classes, loadable as lenet:PATH.
    weights = out / "iter-1" / "model.safetensors"
    dnn2 = load_model(f"lenet:{weights}")
    assert dnn2.class_names == [str(i) for i in range(10)] + [FOOLING]

    # The fooling images: champions of the run against DNN1, each really fooling DNN1.
    kept = np.load(out / "iter-1" / "fooling.npz")
    n = len(kept["images"])
    assert 0 < n <= 40 and rows[0]["kept"] == n and rows[1]["fooling_train_images"] == n
    assert rows[0]["harvested"] >= n and len({im.tobytes() for im in kept["images"]}) == n
    # Re-scored as the run scored them (its recorded runtime: ONNX Runtime and torch differ in the last bits).
    from evofool.scoring import build_scoring

    runtime = json.loads((out / "iter-1" / "run" / "config.json").read_text())["config"]["runtime"]
    _, evaluator = build_scoring("lenet-mnist", device="cpu", runtime=runtime)
    probs = evaluator.evaluate(torch.from_numpy(kept["images"])).probs
    own = probs[torch.arange(n), torch.from_numpy(kept["classes"])]
    assert (own >= 0.9).all()
    np.testing.assert_allclose(own.numpy(), kept["confidences"], rtol=1e-9)

    # Test accuracies: recomputed independently on the real test set (11-way argmax for DNN2).
    from evofool.data import load_idx_dataset

    test_x, test_y = load_idx_dataset(mnist_dir, "test")
    assert rows[0]["test_accuracy"] == pytest.approx(accuracy(load_model("lenet-mnist").module, test_x, test_y))
    assert rows[1]["test_accuracy"] == pytest.approx(accuracy(dnn2.module, test_x, test_y))
    assert rows[1]["test_accuracy"] > 0.5  # 2000 images, 1 epoch: a weak but real classifier

    # The run against DNN2 has only the 10 real classes as cells; its champions.json
    # confidences are the 11-class softmax of the saved PNGs, without the fooling column.
    run2 = out / "iter-2" / "run"
    config = json.loads((run2 / "config.json").read_text())
    assert config["config"]["model"] == f"first:10:lenet:{weights.resolve()}"
    assert config["class_names"] == [str(i) for i in range(10)]
    champions = json.loads((run2 / "champions.json").read_text())["champions"]
    assert len(champions) == 10
    x = torch.stack([load_image(run2 / c["file"], (1, 28, 28)) for c in champions])
    with torch.no_grad():
        softmax = torch.softmax(dnn2.module(x.float() / 255).double(), dim=1)
    for k, c in enumerate(champions):
        assert c["confidence"] == pytest.approx(float(softmax[k, c["class"]]), rel=1e-6)
    assert rows[1]["median_confidence"] == pytest.approx(np.median([c["confidence"] for c in champions]))
    assert rows[1]["n9999"] == sum(c["confidence"] >= 0.9999 for c in champions)

    # CSV and the printed table agree with the JSON.
    table = list(csv.DictReader(io.StringIO((out / "retrain.csv").read_text())))
    assert [t["dnn"] for t in table] == ["DNN1", "DNN2"]
    assert float(table[1]["test_accuracy"]) == pytest.approx(rows[1]["test_accuracy"])
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("DNN "))
    assert lines[header + 1].startswith("DNN1 ") and lines[header + 2].startswith("DNN2 ")
    assert f"{100 * rows[1]['test_accuracy']:.2f}%" in lines[header + 2]


def test_runs_of_a_retrain_resume_and_transfer(tiny):
    """The first:N:SPEC model of a retrain run loads through the CLI (resume, transfer)."""
    out, _ = tiny
    run2 = out / "iter-2" / "run"
    result = invoke("transfer", run2, "--model", "lenet-mnist", "--out", out / "t.json")
    assert result.exit_code == 0, result.output
    result = invoke("resume", run2, "--generations", 13, "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    assert len((run2 / "log.jsonl").read_text().splitlines()) == 13


def test_retrain_errors_are_one_line(mnist_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_line_error(invoke("retrain", "--data", mnist_dir, *TINY, "--out", tmp_path / "full"), "not an empty folder")
    one_line_error(invoke("retrain", "--data", tmp_path / "nope", *TINY, "--out", tmp_path / "a"), "does not exist")
    one_line_error(invoke("retrain", "--data", mnist_dir, "--iterations", 0, "--out", tmp_path / "b"),
                   "iterations must be at least 1")
    one_line_error(invoke("retrain", "--data", mnist_dir, "--model", "unit:conv2.1:lenet-mnist",
                          "--out", tmp_path / "c"), "raw unit scores")
    one_line_error(invoke("retrain", "--data", mnist_dir, "--model", "no-such", "--out", tmp_path / "d"),
                   "unknown model")
    one_line_error(invoke("retrain", "--data", mnist_dir, "--min-confidence", 2, "--out", tmp_path / "e"),
                   "min-confidence")
    one_line_error(invoke("retrain", "--data", mnist_dir), "--out")
    assert not any((tmp_path / n).exists() for n in "abcde")


@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST not installed at {FASHION} (apt-get install dataset-fashion-mnist)")
def test_retrain_on_fashion_mnist(tmp_path):
    out = tmp_path / "fashion"
    result = invoke("retrain", "--data", FASHION, "--model", "lenet-fashion", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    dnn2 = load_model(f"lenet:{out / 'iter-1' / 'model.safetensors'}")
    assert dnn2.class_names[0] == "T-shirt/top" and dnn2.class_names[-2:] == ["Ankle boot", FOOLING]
    champions = json.loads((out / "iter-2" / "run" / "champions.json").read_text())["champions"]
    assert [c["name"] for c in champions][-1] == "Ankle boot" and len(champions) == 10


@SLOW
@pytest.mark.slow
def test_retrained_network_keeps_its_accuracy(mnist_dir, tmp_path):
    """Full training data, 5 epochs: the 11-class DNN2 stays ≥ 98.5 % on the 10 real classes."""
    out = tmp_path / "full"
    result = invoke("retrain", "--data", mnist_dir, "--iterations", 1, "--generations", 100, "--population", 200,
                    "--epochs", 5, "--quiet", "--out", out)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "retrain.json").read_text())["iterations"]
    assert rows[1]["test_accuracy"] >= 0.985 and rows[1]["fooling_train_images"] >= 300
    assert rows[1]["fooling_recall"] >= 0.9
