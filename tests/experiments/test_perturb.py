"""``evofool perturb``: Szegedy et al.'s minimal perturbations on the shipped LeNet and real MNIST."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from evofool.evaluator import BatchEvaluator
from evofool.experiments.perturb import difference_image, distortion
from evofool.imageio import load_image, save_png
from evofool.models import load_model
from fault_helpers import invoke, one_line_error


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


def read(path) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's read-only buffer (imageio)
        return load_image(path, (1, 28, 28))


@pytest.fixture(scope="module")
def batch(tmp_path_factory, mnist_dir):
    """``perturb --mnist-test 10`` (targets (label+1) mod 10), shared by the tests below."""
    out = tmp_path_factory.mktemp("perturb") / "out"
    result = invoke("perturb", "--mnist-test", 10, "--data", mnist_dir, "--model", "lenet-mnist", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result, json.loads((out / "perturb.json").read_text())


def test_mnist_batch_succeeds_with_paper_sized_distortion(batch, mnist_test):
    out, result, report = batch
    assert "success rate" in result.stdout and "mean distortion" in result.stdout
    assert report["images"] == 10 and report["success_rate"] >= 0.9
    # The paper reports 0.058-0.14 on its MNIST models.
    assert 0.02 < report["mean_distortion"] < 0.2
    _, labels = mnist_test
    assert [e["label"] for e in report["results"]] == [int(v) for v in labels[:10]]
    assert all(e["target"] == str((e["label"] + 1) % 10) for e in report["results"])


def test_every_saved_perturbed_image_is_classified_as_its_target(batch, mnist_test):
    out, _, report = batch
    model = load_model("lenet-mnist")
    ok = [e for e in report["results"] if e["success"]]
    perturbed = torch.stack([read(out / e["files"]["perturbed"]) for e in ok])
    originals = torch.stack([read(out / e["files"]["original"]) for e in ok])
    pred = BatchEvaluator(model, device="cpu").evaluate(perturbed).probs.argmax(1)
    assert pred.tolist() == [int(e["target"]) for e in ok]
    assert report["all_successes_verified"]
    # Originals are the test images, untouched, and were classified as their labels.
    x, _ = mnist_test
    idx = [e["index"] for e in ok]
    assert torch.equal(originals, torch.as_tensor(x[idx]).view(-1, 1, 28, 28))
    # The reported distortion is that of the saved files.
    np.testing.assert_allclose(distortion(perturbed, originals).numpy(), [e["distortion"] for e in ok],
                               rtol=1e-9)


def test_difference_images_are_mid_grey_where_unchanged(batch):
    out, _, report = batch
    entry = report["results"][0]
    orig, pert, diff = (read(out / entry["files"][k]) for k in ("original", "perturbed", "difference"))
    same = orig == pert
    assert same.any() and (~same).any()
    assert (diff[same] == 128).all() and (diff[~same] != 128).any()
    assert int((diff.int() - 128).abs().max()) == 127  # rescaled to be visible


def test_single_image_with_named_target(tmp_path, mnist_test):
    x, y = mnist_test
    png = save_png(torch.as_tensor(x[3]).view(1, 28, 28), tmp_path / "digit.png")
    target = (int(y[3]) + 5) % 10
    out = tmp_path / "one"
    result = invoke("perturb", png, "--target", target, "--out", out, "--search-steps", 5, "--max-iter", 30)
    assert result.exit_code == 0, result.output
    assert f"{png}: {int(y[3])} → {target}" in result.stdout
    report = json.loads((out / "perturb.json").read_text())
    assert report["results"][0]["success"] and report["results"][0]["label"] is None
    assert BatchEvaluator(load_model("lenet-mnist"), device="cpu").evaluate(
        read(out / "0000-perturbed.png")[None]).probs.argmax(1).item() == target


def test_fixed_target_for_the_batch(tmp_path, mnist_dir):
    out = tmp_path / "fixed"
    result = invoke("perturb", "--mnist-test", 2, "--data", mnist_dir, "--target", 4, "--out", out,
                    "--search-steps", 2, "--max-iter", 20)
    assert result.exit_code == 0, result.output
    assert [e["target"] for e in json.loads((out / "perturb.json").read_text())["results"]] == ["4", "4"]


def test_distortion_and_difference_helpers():
    a = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 255
    np.testing.assert_allclose(distortion(b, a).numpy(), [0.5, 0.0])  # √(1/4), 0
    diff, scale = difference_image(b[0], a[0])
    assert diff.flatten().tolist() == [255, 128, 128, 128] and scale == 1.0


@pytest.mark.parametrize("args, fragment", [
    ([], "give either IMAGE or --mnist-test N"),
    (["--mnist-test", "0"], "at least 1 image"),
    (["--mnist-test", "2", "--target", "12"], "out of range"),
    (["--mnist-test", "2", "--target", "1,2"], "one class"),
    (["--mnist-test", "2", "--model", "nope"], "unknown model 'nope'"),
    (["--mnist-test", "2", "--data", "/nonexistent/mnist"], "pass --data DIR"),
    (["/nonexistent/x.png", "--target", "1"], "does not exist"),
])
def test_bad_input_is_one_line(tmp_path, args, fragment):
    one_line_error(invoke("perturb", *args, "--out", tmp_path / "o"), fragment)


def test_image_needs_a_target_and_excludes_mnist(tmp_path):
    png = save_png(torch.zeros(1, 28, 28, dtype=torch.uint8), tmp_path / "z.png")
    one_line_error(invoke("perturb", png), "--target is required with IMAGE")
    one_line_error(invoke("perturb", png, "--mnist-test", 3, "--target", 1), "either IMAGE or --mnist-test")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    one_line_error(invoke("perturb", png, "--target", 1, "--out", tmp_path / "full"), "not an empty folder")
