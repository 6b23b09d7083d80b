"""``evofool ascent`` end to end on the shipped LeNet, through the real CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.experiments import parse_classes
from evofool.imageio import load_image
from evofool.models import load_model
from fault_helpers import invoke, one_line_error

# The keys of every 'evofool run' log record (evofool.engine.Engine.step).
RUN_RECORD_KEYS = {"generation", "evaluations", "improved", "min", "median", "max", "n99", "n9999",
                   "evals_per_s", "seconds"}


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


def rescore(folder, classes: list[int]) -> np.ndarray:
    """Each champion PNG's confidence for its own class, read back from disk."""
    model = load_model("lenet-mnist")
    champs = {c["class"]: c for c in json.loads((folder / "champions.json").read_text())["champions"]}
    assert sorted(champs) == sorted(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's read-only buffer (imageio)
        images = torch.stack([load_image(folder / champs[k]["file"], model.input_shape) for k in classes])
    probs = BatchEvaluator(model, device="cpu").evaluate(images).probs
    return probs[torch.arange(len(classes)), torch.tensor(classes)].numpy()


@pytest.fixture(scope="module")
def all_classes(tmp_path_factory):
    """One default ascent over all 10 MNIST classes (shared by the tests below)."""
    out = tmp_path_factory.mktemp("ascent") / "run"
    result = invoke("ascent", "--model", "lenet-mnist", "--out", out, "--seed", 0, "--quiet")
    assert result.exit_code == 0, result.output
    return out, result


def test_ascent_reaches_9999_for_all_ten_classes(all_classes):
    out, result = all_classes
    assert "10/10 images ≥ 99.9900%" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n9999"] == 10 and summary["reached_target"] and summary["below_target"] == []
    assert summary["all_9999_at"] == summary["generation"] <= 500
    # The saved 8-bit PNGs themselves are ≥ 99.99 % for their class.
    assert (rescore(out, list(range(10))) >= 0.9999).all()
    champs = json.loads((out / "champions.json").read_text())["champions"]
    assert all(c["confidence"] >= 0.9999 for c in champs)


def test_ascent_writes_a_run_folder_like_evofool_run(all_classes):
    out, _ = all_classes
    doc = json.loads((out / "config.json").read_text())
    config = doc["config"]
    assert config["encoding"] == "ascent" and config["model"] == "lenet-mnist"
    assert config["population"] == 10 and config["stop_at"] == 0.9999 and config["seed"] == 0
    assert config["encoding_params"]["classes"] == list(range(10))
    assert doc["class_names"] == [str(i) for i in range(10)]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(set(r) == RUN_RECORD_KEYS for r in log)
    assert [r["generation"] for r in log] == list(range(1, len(log) + 1))
    assert [r["evaluations"] for r in log] == [10 * r["generation"] for r in log]
    # Champions only ever improve, as in the archive of an evolution run.
    assert all(b["min"] >= a["min"] and b["median"] >= a["median"] for a, b in zip(log, log[1:]))
    assert log[-1]["n9999"] == 10 and all(r["n9999"] < 10 for r in log[:-1])
    assert len(list((out / "champions").glob("*.png"))) == 10


def test_export_makes_a_gallery_of_an_ascent_run(all_classes):
    out, _ = all_classes
    result = invoke("export", out, "--verify")
    assert result.exit_code == 0, result.output
    assert (out / "gallery" / "index.html").is_file()
    assert "verified" in result.stdout


def test_subset_by_name_with_blur_and_sparse_log(tmp_path):
    out = tmp_path / "few"
    result = invoke("ascent", "--classes", "7,3", "--start", "mean", "--blur-every", 3, "--blur-sigma", 0.7,
                    "--log-every", 4, "--steps", 300, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == 2 and summary["reached_target"]
    assert (rescore(out, [7, 3]) >= 0.9999).all()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    gens = [r["generation"] for r in log]
    assert gens[:-1] == list(range(4, 4 * len(gens) - 3, 4)) and gens[-1] == summary["generation"]
    assert all(r["evaluations"] == 2 * r["generation"] for r in log)


def test_same_seed_same_images_and_step_limit(tmp_path):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        result = invoke("ascent", "--classes", "1,8", "--steps", 3, "--seed", seed, "--out", tmp_path / name,
                        "--quiet")
        assert result.exit_code == 0, result.output
        runs.append([(tmp_path / name / "champions" / f).read_bytes() for f in ("0001-1.png", "0008-8.png")])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["generation"] <= 3 and summary["classes"] == 2


@pytest.mark.parametrize("args, fragment", [
    (["--classes", "12"], "out of range"),
    (["--classes", "three"], "unknown class 'three'"),
    (["--classes", "1,1"], "listed twice"),
    (["--start", "zeros"], "--start"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--target", "1.5"], "--target must lie in (0, 1]"),
    (["--max-lr", "0"], "--max-lr must be positive"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--blur-every", "1", "--blur-sigma", "1e308"], "--blur-sigma must lie in 0..100 pixels"),
    (["--blur-sigma", "nan"], "--blur-sigma must lie in 0..100 pixels"),
    (["--device", "meta"], "device 'meta' is not supported"),
])
def test_bad_input_is_one_line(tmp_path, args, fragment):
    one_line_error(invoke("ascent", *args, "--out", tmp_path / "x", "--quiet"), fragment)
    assert not (tmp_path / "x").exists()  # refused before its folder is made


def unit_model(arg: str, spec: str, device):
    """A registry loader (``PrefixLoader(__name__, "unit_model", ...)``) of raw unit scores."""
    from evofool.models.base import Classifier

    return Classifier(spec, torch.nn.Flatten(), (1, 28, 28), ["a"], outputs="scores")


def test_refuses_raw_unit_scores(tmp_path, monkeypatch):
    from evofool.models import PREFIX_LOADERS, PrefixLoader

    monkeypatch.setitem(PREFIX_LOADERS, "fakeunit", PrefixLoader(__name__, "unit_model", "fakeunit:X", "test"))
    one_line_error(invoke("ascent", "--model", "fakeunit:x", "--out", tmp_path / "u", "--quiet"),
                   "ascent needs a classifier")


def test_refuses_an_existing_run_folder(all_classes):
    out, _ = all_classes
    one_line_error(invoke("ascent", "--out", out, "--quiet"), "already holds a run")


def test_parse_classes_names_and_indices():
    names = ["cat", "dog", "7"]
    assert parse_classes(None, names) == [0, 1, 2]
    assert parse_classes("dog, 0", names) == [1, 0]
    assert parse_classes("7", names) == [2]  # a name wins over the index it spells


def test_a_class_name_several_classes_share_asks_for_the_index():
    names = ["crane", "dog", "crane"]  # ImageNet's 134 and 517 are both "crane"
    with pytest.raises(EvofoolError, match="'crane' is shared by classes 0, 2: give the index"):
        parse_classes("crane", names)
    assert parse_classes("2, dog", names) == [2, 1]
