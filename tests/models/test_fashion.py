"""The shipped ``lenet-fashion`` model on the real Fashion-MNIST test set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from evofool.evaluator import BatchEvaluator
from evofool.models import WEIGHTS_DIR, load_model

FASHION = Path(os.environ.get("EVOFOOL_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]


@pytest.fixture(scope="module")
def fashion_test():
    if not any(FASHION.glob("t10k-images*")):
        pytest.skip(f"Fashion-MNIST idx files not found in {FASHION}: apt-get install dataset-fashion-mnist "
                    "or set EVOFOOL_FASHION_DIR")
    from evofool.data import load_idx_dataset

    return load_idx_dataset(FASHION, "test")


def test_lenet_fashion_is_registered_with_its_class_names():
    clf = load_model("lenet-fashion")
    assert clf.class_names == NAMES and clf.input_shape == (1, 28, 28) and clf.outputs == "logits"
    meta = json.loads((WEIGHTS_DIR / "lenet-fashion.json").read_text())
    assert meta["seed"] == 0 and "--data /usr/share/datasets/fashion-mnist" in meta["command"]


def test_lenet_fashion_accuracy_on_the_test_set(fashion_test):
    images, labels = fashion_test
    assert len(images) == 10_000
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
            probs = BatchEvaluator(load_model("lenet-fashion"), device="cpu", max_batch=2000).evaluate(
            images.view(-1, 1, 28, 28)).probs
    finally:
        torch.set_num_threads(before)
    acc = float((probs.argmax(1) == labels).double().mean())
    assert acc >= 0.89, acc
    # The sidecar records what training measured; scoring through evofool reproduces it.
    meta = json.loads((WEIGHTS_DIR / "lenet-fashion.json").read_text())
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-4)
