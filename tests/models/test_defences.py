"""Defence specs: ``ensemble:SPEC,...`` and ``smooth:gauss=SIGMA:SPEC`` on the shipped LeNet."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from evofool.cli import cli
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.models import PREFIX_LOADERS, PrefixLoader, load_model
from evofool.models.base import Classifier
from evofool.models.defences import gaussian_blur
from evofool.models.lenet import LeNet, save_lenet
from fault_helpers import one_line_error


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def other_lenet(tmp_path_factory) -> str:
    """A second, differently initialised 10-class LeNet (so the ensemble mean is not trivial)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    save_lenet(LeNet(10), path, {"class_names": [str(i) for i in range(10)]})
    return str(path)


@pytest.fixture(scope="module")
def images(mnist_test) -> torch.Tensor:
    """32 MNIST test digits and 8 noise images, uint8 N×1×28×28."""
    x, _ = mnist_test
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (8, 1, 28, 28), generator=gen, dtype=torch.uint8)
    return torch.cat([torch.as_tensor(x[:32]).view(32, 1, 28, 28), noise])


def softmax_of(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = classifier.module(classifier.preprocess(images.float() / 255))
    return torch.softmax(logits.double(), dim=1)


def colour_model(arg: str, spec: str, device) -> Classifier:
    """A registry loader (``PrefixLoader(__name__, "colour_model", ...)``): 3×8×8 input, 10 classes."""
    return Classifier(spec, torch.nn.Flatten(), (3, 8, 8), [str(i) for i in range(10)])


def unit_model(arg: str, spec: str, device) -> Classifier:
    """A registry loader of a model with raw unit scores (as ``unit:`` specs have)."""
    return Classifier(spec, torch.nn.Flatten(), (1, 28, 28), [str(i) for i in range(10)], outputs="scores")


def test_ensemble_is_the_mean_of_the_members_softmax(images, other_lenet):
    spec = f"ensemble:lenet-mnist,lenet:{other_lenet}"
    ens = load_model(spec)
    assert ens.spec == spec and ens.outputs == "probs" and ens.input_shape == (1, 28, 28)
    assert ens.class_names == [str(i) for i in range(10)]
    expected = (softmax_of(load_model("lenet-mnist"), images) + softmax_of(load_model(f"lenet:{other_lenet}"),
                                                                            images)) / 2
    with torch.no_grad():
        got = ens.module(ens.preprocess(images.float() / 255))
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-6)
    # Through the evaluator too (it takes log of 'probs' outputs instead of a log-softmax).
    probs = BatchEvaluator(ens, device="cpu").evaluate(images).probs
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    # The members really differ, so this is not a trivial mean.
    assert (expected - softmax_of(load_model("lenet-mnist"), images)).abs().max() > 0.1


def test_ensemble_of_one_model_twice_equals_the_model(images):
    plain = softmax_of(load_model("lenet-mnist"), images)
    probs = BatchEvaluator(load_model("ensemble:lenet-mnist, lenet-mnist"), device="cpu").evaluate(images).probs
    torch.testing.assert_close(probs, plain, rtol=0, atol=1e-6)


def test_bad_ensemble_members_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(EvofoolError, match="ensemble member 2 'nope'.*unknown model"):
        load_model("ensemble:lenet-mnist,nope")
    with pytest.raises(EvofoolError, match="empty ensemble member"):
        load_model("ensemble:lenet-mnist,")
    torch.manual_seed(0)
    save_lenet(LeNet(11), tmp_path / "eleven.safetensors", {"class_names": [str(i) for i in range(11)]})
    with pytest.raises(EvofoolError, match="member 2 .* 11 classes that differ"):
        load_model(f"ensemble:lenet-mnist,lenet:{tmp_path / 'eleven.safetensors'}")
    # A model of another input shape (3×8×8), registered just for this test.
    monkeypatch.setitem(PREFIX_LOADERS, "fake", PrefixLoader(__name__, "colour_model", "fake:X", "test"))
    with pytest.raises(EvofoolError, match=r"member 2 'fake:x' takes C×H×W = \(3, 8, 8\)"):
        load_model("ensemble:lenet-mnist,fake:x")
    # Raw unit activations (unit: specs) have no softmax to average.
    monkeypatch.setitem(PREFIX_LOADERS, "units", PrefixLoader(__name__, "unit_model", "units:X", "test"))
    with pytest.raises(EvofoolError, match="member 2 'units:x' outputs raw unit activations"):
        load_model("ensemble:lenet-mnist,units:x")


def test_bad_member_on_the_command_line_is_one_line(tmp_path):
    png = tmp_path / "x.png"
    from evofool.imageio import save_png

    save_png(torch.zeros(1, 28, 28, dtype=torch.uint8), png)
    result = CliRunner().invoke(cli, ["classify", "--model", "ensemble:lenet-mnist,nope", str(png)])
    one_line_error(result, "ensemble member 2", "nope")
    result = CliRunner().invoke(cli, ["classify", "--model", "smooth:gauss=-1:lenet-mnist", str(png)])
    one_line_error(result, "sigma must lie in 0..100 pixels")


def test_smoothing_with_sigma_to_zero_is_the_plain_model(images):
    plain = softmax_of(load_model("lenet-mnist"), images)
    for sigma in ("0", "1e-3", "0.05"):
        smooth = load_model(f"smooth:gauss={sigma}:lenet-mnist")
        assert smooth.outputs == "logits" and smooth.class_names == [str(i) for i in range(10)]
        torch.testing.assert_close(softmax_of(smooth, images), plain, rtol=0, atol=1e-6)
    # A real blur changes the outputs (it is not silently ignored).
    blurred = softmax_of(load_model("smooth:gauss=1.5:lenet-mnist"), images)
    assert (blurred - plain).abs().max() > 1e-2


def test_smooth_wraps_any_spec_including_an_ensemble_member(images, other_lenet):
    spec = f"ensemble:smooth:gauss=1:lenet-mnist,lenet:{other_lenet}"
    ens = load_model(spec)
    expected = (softmax_of(load_model("smooth:gauss=1:lenet-mnist"), images)
                + softmax_of(load_model(f"lenet:{other_lenet}"), images)) / 2
    torch.testing.assert_close(BatchEvaluator(ens, device="cpu").evaluate(images).probs, expected,
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("smooth:lenet-mnist", "not of the form"),
    ("smooth:gauss=1", "not of the form"),
    ("smooth:gauss=abc:lenet-mnist", "not a number"),
    ("smooth:gauss=nan:lenet-mnist", "must lie in 0..100"),
    ("smooth:gauss=-1:lenet-mnist", "must lie in 0..100"),
    ("smooth:gauss=1e308:lenet-mnist", "must lie in 0..100"),  # its kernel length overflowed
    ("smooth:gauss=inf:lenet-mnist", "must lie in 0..100"),
    ("smooth:blur=1:lenet-mnist", "not of the form"),
    ("smooth:gauss=1:nope", "smoothed model 'nope'"),
])
def test_bad_smooth_specs(spec, message):
    with pytest.raises(EvofoolError, match=message):
        load_model(spec)


def test_gaussian_blur_keeps_constants_and_mass():
    x = torch.full((2, 3, 9, 7), 0.25)
    torch.testing.assert_close(gaussian_blur(x, 2.0), x)
    # Radius larger than the image still works (each axis padded separately).
    assert gaussian_blur(torch.rand(1, 1, 5, 5), 10.0).shape == (1, 1, 5, 5)
    dot = torch.zeros(1, 1, 15, 15)
    dot[0, 0, 7, 7] = 1.0
    out = gaussian_blur(dot, 1.0)
    assert abs(float(out.sum()) - 1.0) < 1e-5 and float(out[0, 0, 7, 7]) < 0.2
    assert torch.equal(gaussian_blur(dot, 0.0), dot)


def test_defences_work_in_run_and_classify(tmp_path):
    spec = "ensemble:lenet-mnist,smooth:gauss=0.5:lenet-mnist"
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--model", spec, "--generations", "3", "--population", "20",
                                      "--out", str(out), "--quiet", "--no-gallery"])
    assert result.exit_code == 0, result.output
    champion = next((out / "champions").glob("*.png"))
    result = CliRunner().invoke(cli, ["classify", "--model", spec, "--json", str(champion)])
    assert result.exit_code == 0, result.output
    assert '"confidence"' in result.stdout
