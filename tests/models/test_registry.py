"""Model specs: named, lenet:PATH, torchscript:PATH, torchvision:NAME, and their errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.models import DEFAULT_MODEL, list_models, load_model
from evofool.models.lenet import LeNet, save_lenet


class TinyNet(nn.Module):
    """A 3-channel 8×8 → 4-class model, small enough to script in a test."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def write_scripted(tmp_path, sidecar: dict | None, name: str = "tiny.pt"):
    torch.manual_seed(0)
    net = TinyNet().eval()
    path = tmp_path / name
    torch.jit.save(torch.jit.script(net), str(path))
    if sidecar is not None:
        (tmp_path / (name + ".json")).write_text(json.dumps(sidecar))
    return net, path


# torch 2.13 deprecates TorchScript; it is still what this loader is for.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SIDECAR = {"input_shape": [3, 8, 8], "class_names": ["a", "b", "c", "d"],
           "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5], "scale": 2.0}


def test_default_and_listing():
    assert DEFAULT_MODEL == "lenet-mnist"
    specs = [s for s, _ in list_models()]
    for spec in ("lenet-mnist", "lenet-mnist-b", "lenet:PATH", "torchscript:PATH", "torchvision:NAME"):
        assert spec in specs
    assert all(desc and "\n" not in desc for _, desc in list_models())
    assert load_model().spec == "lenet-mnist"


@pytest.mark.parametrize("spec", ["resnet-imaginary", "nosuch:thing", ""])
def test_unknown_spec_lists_known_models(spec):
    with pytest.raises(EvofoolError, match="unknown model.*lenet-mnist.*torchscript:PATH"):
        load_model(spec)


def test_prefix_without_argument():
    with pytest.raises(EvofoolError, match="needs an argument: torchscript:PATH"):
        load_model("torchscript:")


def test_torchscript_round_trip(tmp_path):
    net, path = write_scripted(tmp_path, SIDECAR)
    clf = load_model(f"torchscript:{path}")
    assert clf.spec == f"torchscript:{path}"
    assert clf.input_shape == (3, 8, 8) and clf.class_names == ["a", "b", "c", "d"]
    x = torch.rand(5, 3, 8, 8)
    mean = torch.tensor(SIDECAR["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(SIDECAR["std"]).view(1, 3, 1, 1)
    expected = torch.softmax(net((x * 2.0 - mean) / std).double(), 1)
    got = BatchEvaluator(clf, device="cpu").evaluate(x).probs
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, check_dtype=False)


def test_torchscript_sidecar_with_suffix_replaced(tmp_path):
    _, path = write_scripted(tmp_path, None)
    (tmp_path / "tiny.json").write_text(json.dumps({"input_shape": [3, 8, 8],
                                                    "class_names": list("wxyz")}))
    clf = load_model(f"torchscript:{path}")
    assert clf.class_names == list("wxyz")
    # Defaults: no normalisation.
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(clf.preprocess(x), x)


def test_torchscript_missing_file(tmp_path):
    with pytest.raises(EvofoolError, match="does not exist"):
        load_model(f"torchscript:{tmp_path / 'nope.pt'}")


def test_torchscript_missing_sidecar(tmp_path):
    _, path = write_scripted(tmp_path, None)
    with pytest.raises(EvofoolError, match="no metadata sidecar"):
        load_model(f"torchscript:{path}")


def test_not_torchscript(tmp_path):
    path = tmp_path / "fake.pt"
    path.write_bytes(b"this is not a model" * 10)
    (tmp_path / "fake.pt.json").write_text(json.dumps(SIDECAR))
    with pytest.raises(EvofoolError, match="not a TorchScript archive"):
        load_model(f"torchscript:{path}")


def test_torchscript_sidecar_class_count_mismatch(tmp_path):
    _, path = write_scripted(tmp_path, {**SIDECAR, "class_names": ["a", "b"]})
    with pytest.raises(EvofoolError, match="lists 2 class names"):
        load_model(f"torchscript:{path}")


@pytest.mark.parametrize("bad", [{"input_shape": [8, 8]}, {"class_names": []}, {"mean": [0.5]}])
def test_torchscript_bad_sidecar(tmp_path, bad):
    _, path = write_scripted(tmp_path, {**SIDECAR, **bad})
    with pytest.raises(EvofoolError, match="tiny.pt.json"):
        load_model(f"torchscript:{path}")


def test_torchvision_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(EvofoolError) as info:
        load_model("torchvision:resnet18")
    assert str(info.value) == ("torchvision is not installed; "
                               "install it with pip install 'evofool[vision]'")


def test_lenet_path_loads_saved_file(tmp_path):
    torch.manual_seed(1)
    model = LeNet(num_classes=11).eval()
    names = [str(i) for i in range(10)] + ["fool"]
    save_lenet(model, tmp_path / "own.safetensors", {"class_names": names, "seed": 7})
    clf = load_model(f"lenet:{tmp_path / 'own.safetensors'}")
    assert clf.num_classes == 11 and clf.class_names[-1] == "fool" and clf.meta["seed"] == 7
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(clf.module(x), model(x), rtol=0, atol=0)


def test_lenet_path_without_sidecar_uses_index_names(tmp_path):
    save_lenet(LeNet(num_classes=10), tmp_path / "w.safetensors")
    (tmp_path / "w.json").unlink()
    assert load_model(f"lenet:{tmp_path / 'w.safetensors'}").class_names == [str(i) for i in range(10)]


def test_lenet_path_errors(tmp_path):
    with pytest.raises(EvofoolError, match="does not exist"):
        load_model(f"lenet:{tmp_path / 'missing.safetensors'}")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EvofoolError, match="not a safetensors"):
        load_model(f"lenet:{junk}")


def test_torch_save_file_is_not_torchscript(tmp_path):
    # torch.save output is also a zip archive; it must still be refused clearly.
    path = tmp_path / "state.pt"
    torch.save(TinyNet().state_dict(), path)
    (tmp_path / "state.pt.json").write_text(json.dumps(SIDECAR))
    with pytest.raises(EvofoolError, match="not a TorchScript archive"):
        load_model(f"torchscript:{path}")


def test_every_entry_names_a_loader_function():
    """One style: each entry is a module and a function in it, imported only when a spec uses it."""
    import importlib

    from evofool.models import NAMED_MODELS, PREFIX_LOADERS

    for entry in [*NAMED_MODELS.values(), *PREFIX_LOADERS.values()]:
        assert callable(getattr(importlib.import_module(entry.module), entry.function)), entry


def test_importing_the_registry_imports_no_loader():
    import subprocess

    code = ("import sys, evofool.models; "
            "print(sorted(m for m in sys.modules if m.startswith('evofool.models.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['evofool.models.base']", loaded


def test_the_usage_strings_are_the_registry_s():
    from evofool.models import PREFIX_LOADERS
    from evofool.models.units import USAGE

    assert USAGE == PREFIX_LOADERS["unit"].usage
    with pytest.raises(EvofoolError, match=r"needs units and a model: unit:LAYER\.CHANNEL\[,LAYER\.CHANNEL\.\.\.\]"):
        load_model("unit:conv2.1")
