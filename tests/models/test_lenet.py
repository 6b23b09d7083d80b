"""The shipped LeNet: Caffe's architecture, and ≥ 99 % on the real MNIST test set."""

from __future__ import annotations

import json

import torch

from evofool.evaluator import BatchEvaluator
from evofool.models import WEIGHTS_DIR, load_model
from evofool.models.lenet import LeNet, load_lenet, save_lenet


def test_architecture_matches_caffe_lenet():
    clf = load_model("lenet-mnist")
    shapes = {k: tuple(v.shape) for k, v in clf.module.state_dict().items()}
    assert shapes == {
        "conv1.weight": (20, 1, 5, 5), "conv1.bias": (20,),
        "conv2.weight": (50, 20, 5, 5), "conv2.bias": (50,),
        "ip1.weight": (500, 800), "ip1.bias": (500,),
        "ip2.weight": (10, 500), "ip2.bias": (10,),
    }
    assert sum(v.numel() for v in clf.module.parameters()) == 431_080
    assert clf.input_shape == (1, 28, 28)
    assert clf.class_names == [str(i) for i in range(10)]
    assert clf.outputs == "logits" and not clf.resize_inputs


def test_forward_matches_caffe_layer_order():
    # conv → pool → conv → pool → ip → ReLU → ip, with no ReLU after the convolutions.
    model = LeNet().eval()
    x = torch.rand(3, 1, 28, 28)
    h = torch.nn.functional.max_pool2d(model.conv1(x), 2)
    assert h.shape == (3, 20, 12, 12)
    h = torch.nn.functional.max_pool2d(model.conv2(h), 2)
    assert h.shape == (3, 50, 4, 4)
    expected = model.ip2(torch.relu(model.ip1(h.flatten(1))))
    torch.testing.assert_close(model(x), expected)


def test_shipped_model_accuracy_on_mnist_test_set(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 28, 28)
    for spec in ("lenet-mnist", "lenet-mnist-b"):
        clf = load_model(spec)
        probs = BatchEvaluator(clf, device="cpu").evaluate(images.unsqueeze(1)).probs
        accuracy = (probs.argmax(1) == labels).float().mean().item()
        assert accuracy >= 0.99, f"{spec}: {accuracy:.4f}"
        # The sidecar records what we measure now (same data, same weights).
        assert abs(clf.meta["test_accuracy"] - accuracy) <= 2e-4  # ≤ 2 near-ties may flip


def test_shipped_weights_have_metadata():
    for name, seed in (("lenet-mnist", 0), ("lenet-mnist-b", 1)):
        meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        assert meta["seed"] == seed
        assert meta["command"].startswith("evofool train ")
        assert f"--seed {seed}" in meta["command"]
        assert meta["test_accuracy"] >= 0.99
        assert meta["epochs"] >= 1


def test_two_seeds_give_different_networks():
    a, b = load_model("lenet-mnist").module, load_model("lenet-mnist-b").module
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_save_and_load_round_trip_with_extra_class(tmp_path):
    torch.manual_seed(3)
    model = LeNet(num_classes=11)
    names = [str(i) for i in range(10)] + ["fooling"]
    save_lenet(model, tmp_path / "m.safetensors", {"class_names": names})
    loaded, meta = load_lenet(tmp_path / "m.safetensors")
    assert loaded.num_classes == 11 and meta["class_names"] == names
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
