"""``first:N:SPEC``: only the first N classes of a (retrained) classifier as cells."""

from __future__ import annotations

import pytest
import torch

from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.experiments.retrain import FOOLING
from evofool.models import PREFIX_LOADERS, load_model
from evofool.models.first import FIRST_USAGE
from evofool.models.lenet import LeNet, save_lenet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_first_classes_are_the_unnormalised_softmax_columns(tmp_path, mnist_test):
    torch.manual_seed(0)
    save_lenet(LeNet(11), tmp_path / "m.safetensors", {"class_names": [str(i) for i in range(10)] + [FOOLING]})
    full = load_model(f"lenet:{tmp_path / 'm.safetensors'}")
    first = load_model(f"first:10:lenet:{tmp_path / 'm.safetensors'}")
    assert first.outputs == "probs" and first.class_names == [str(i) for i in range(10)]
    assert first.num_classes == 10 and first.input_shape == (1, 28, 28)
    x = torch.as_tensor(mnist_test[0][:20]).view(20, 1, 28, 28)
    with torch.no_grad():
        softmax = torch.softmax(full.module(x.float() / 255).double(), dim=1)
    probs = BatchEvaluator(first, device="cpu").evaluate(x).probs
    torch.testing.assert_close(probs, softmax[:, :10], rtol=1e-9, atol=1e-12)
    assert (probs.sum(1) < 1).all()  # the 'fooling' mass stays out of every cell


@pytest.mark.parametrize("spec, fragment", [
    ("first:11:lenet-mnist", "N must lie in 1..10"),
    ("first:0:lenet-mnist", "N must lie in 1..10"),
    ("first:x:lenet-mnist", "is not first:N:SPEC"),
    ("first:3", "is not first:N:SPEC"),
    ("first:3:unit:conv2.1:lenet-mnist", "raw unit scores"),
])
def test_first_bad_specs(spec, fragment):
    with pytest.raises(EvofoolError, match=fragment.replace(".", r"\.")):
        load_model(spec)


def test_the_usage_is_the_registry_s():
    assert FIRST_USAGE == PREFIX_LOADERS["first"].usage == "first:N:SPEC"
