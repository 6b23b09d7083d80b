"""``torchvision:NAME`` on real torchvision models, with pretrained-weight files made here.

Weights cannot be downloaded on the machines these tests run on, so each test writes a
seeded random ``state_dict`` where torch hub caches the real download
(``<hub dir>/checkpoints/<file name of the weights' URL>``); torchvision then loads it
exactly as it loads a real download. Skipped where torchvision does not import (its
PyPI wheels need a CUDA build of torch).
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from evofool.cli import cli
from evofool.errors import EvofoolError
from evofool.models import load_model
from run_helpers import run_then_export

tv = pytest.importorskip("torchvision", reason="torchvision is not installed or does not import beside "
                                               "this torch (pip install 'evofool[vision]')")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
DOG = SHARED / "photos" / "dog.jpg"
CLASSES_TXT = SHARED / "imagenet" / "classes.txt"


@pytest.fixture
def hub(tmp_path):
    """A fresh, empty torch hub directory for this test (the real one is put back after)."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


def cache_weights(hub: Path, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Writes seeded random weights for ``name`` where torchvision looks for its download."""
    weights = tv.models.get_model_weights(name).DEFAULT
    torch.manual_seed(seed)
    state = tv.models.get_model(name, weights=None).state_dict()
    target = hub / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return state


@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_loads_default_weights_with_their_preprocessing_and_names(hub, name):
    state = cache_weights(hub, name)
    clf = load_model(f"torchvision:{name}")
    weights = tv.models.get_model_weights(name).DEFAULT
    loaded = clf.module.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)  # the file's weights, not a fresh init
    assert not clf.module.training
    assert clf.spec == f"torchvision:{name}" and clf.input_shape == (3, 224, 224) and clf.resize_inputs
    assert clf.class_names == list(weights.meta["categories"]) and clf.num_classes == 1000
    # Preprocessing is the weights' own normalisation, on images in [0, 1].
    x = torch.rand(2, 3, 224, 224)
    transform = weights.transforms()
    mean = torch.tensor(transform.mean).view(1, 3, 1, 1)
    std = torch.tensor(transform.std).view(1, 3, 1, 1)
    torch.testing.assert_close(clf.preprocess(x), (x - mean) / std)


def test_class_names_are_the_imagenet_classes_in_order(hub):
    if not CLASSES_TXT.is_file():
        pytest.skip(f"{CLASSES_TXT} not found (the shared ImageNet class list lives beside the repository)")
    cache_weights(hub, "resnet18")
    names = load_model("torchvision:resnet18").class_names
    shared = CLASSES_TXT.read_text(encoding="utf-8").splitlines()
    assert len(names) == len(shared) == 1000
    # Same synsets in the same order; torchvision spells out its two duplicate names
    # ("crane bird" 134 / "crane" 517, "maillot tank suit" 639 / "maillot" 638).
    differ = [i for i, (a, b) in enumerate(zip(names, shared)) if a != b]
    assert len(differ) <= 2, [(i, names[i], shared[i]) for i in differ]
    assert names[235] == "German shepherd"


def test_classify_crop_is_the_weights_own_transform(hub):
    if not DOG.is_file():
        pytest.skip(f"{DOG} not found (the shared photos live beside the repository)")
    cache_weights(hub, "resnet18")
    result = CliRunner().invoke(cli, ["classify", str(DOG), "--model", "torchvision:resnet18",
                                      "--json", "--fit", "crop", "--top", "1000"])
    assert result.exit_code == 0, result.output
    ours = np.zeros(1000)
    for entry in json.loads(result.output.splitlines()[0])["top"]:
        ours[entry["index"]] = entry["confidence"]

    # torchvision's own pipeline: resize 256, centre crop 224, normalise, forward.
    weights = tv.models.get_model_weights("resnet18").DEFAULT
    model = tv.models.get_model("resnet18", weights=weights).eval()
    with torch.inference_mode():
        x = weights.transforms()(Image.open(DOG).convert("RGB")).unsqueeze(0)
        theirs = torch.softmax(model(x).double(), 1)[0].numpy()
    assert ours.argmax() == theirs.argmax()
    # Resize arithmetic differs by at most a pixel of crop offset: the scores stay close.
    assert np.abs(ours - theirs).max() < 0.02


def test_two_generation_run_and_gallery(hub, tmp_path):
    cache_weights(hub, "resnet18")
    run = tmp_path / "run"
    summary, manifest = run_then_export(run, "--model", "torchvision:resnet18", "--encoding", "cppn",
                                        "--population", "4", "--generations", "2", "--device", "cpu")
    assert summary["generation"] == 2 and summary["evaluations"] == 8 and summary["classes"] == 1000
    assert len(manifest["classes"]) == 1000
    assert len(list((run / "gallery" / "images").glob("*.png"))) == 1000


def test_unknown_name_lists_the_known_models():
    with pytest.raises(EvofoolError, match=r"torchvision has no classification model 'resnet5000'.*resnet18"):
        load_model("torchvision:resnet5000")


def test_weights_not_obtainable_is_a_one_line_error(hub, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)  # no weights cached in `hub`
    result = CliRunner().invoke(cli, ["classify", str(DOG), "--model", "torchvision:resnet18"])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # torch hub announces the download it tries ("Downloading: ..."); the error is one line after it.
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not load the weights of torchvision:resnet18" in errors[0]
