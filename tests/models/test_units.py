"""``unit:LAYER.CHANNEL,...:SPEC``: activation maximisation on the shipped LeNet."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from evofool.cli import cli
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.models import load_model
from evofool.models.units import Unit, parse_units
from evofool.runfolder import RunFolder



# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(mnist_test) -> torch.Tensor:
    """16 MNIST test digits and 4 noise images, uint8 N×1×28×28."""
    x, _ = mnist_test
    noise = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return torch.cat([torch.as_tensor(x[:16]).view(16, 1, 28, 28), noise])


def manual_layers(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """LeNet's layer outputs computed by hand from its weights (no hooks)."""
    net = load_model("lenet-mnist").module
    x = images.float() / 255
    with torch.no_grad():
        conv1 = net.conv1(x)
        conv2 = net.conv2(F.max_pool2d(conv1, 2))
        ip1 = net.ip1(F.max_pool2d(conv2, 2).flatten(1))
    return {"conv1": conv1, "conv2": conv2, "ip1": ip1}


def test_parse_units():
    units, inner = parse_units("conv2.5, conv2.7,layer4.1.conv2.300:lenet:/tmp/a:b.safetensors")
    assert units == [Unit("conv2", 5), Unit("conv2", 7), Unit("layer4.1.conv2", 300)]
    assert inner == "lenet:/tmp/a:b.safetensors"
    for bad, fragment in [("conv2.5", "needs units and a model"), ("conv2:lenet-mnist", "LAYER.CHANNEL"),
                          ("conv2.x:lenet-mnist", "LAYER.CHANNEL"), ("conv2.-1:lenet-mnist", "LAYER.CHANNEL"),
                          ("conv2.5,conv2.5:lenet-mnist", "listed twice"), (":lenet-mnist", "needs units")]:
        with pytest.raises(EvofoolError, match=fragment):
            parse_units(bad)


def test_hooked_activations_equal_a_manual_forward(images):
    clf = load_model("unit:conv2.5,conv1.3,conv2.7,ip1.42:lenet-mnist")
    assert clf.outputs == "scores" and clf.input_shape == (1, 28, 28)
    assert clf.class_names == ["conv2.5", "conv1.3", "conv2.7", "ip1.42"]
    layers = manual_layers(images)
    expected = torch.stack([layers["conv2"][:, 5].mean((1, 2)), layers["conv1"][:, 3].mean((1, 2)),
                            layers["conv2"][:, 7].mean((1, 2)), layers["ip1"][:, 42]], dim=1)
    with torch.no_grad():
        got = clf.module(clf.preprocess(images.float() / 255))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.std(dim=0).min() > 0  # real, image-dependent values
    # A second call reads fresh activations (nothing cached from the first).
    with torch.no_grad():
        again = clf.module(images[:3].float() / 255)
    torch.testing.assert_close(again, expected[:3], rtol=1e-5, atol=1e-5)


def test_evaluator_contract_scores_are_the_raw_activations(images):
    clf = load_model("unit:conv2.5,conv2.7:lenet-mnist")
    layers = manual_layers(images)
    expected = torch.stack([layers["conv2"][:, 5].mean((1, 2)), layers["conv2"][:, 7].mean((1, 2))], 1)
    logp = BatchEvaluator(clf, device="cpu", max_batch=7).log_probs(images)  # several chunks
    assert logp.dtype == torch.float64
    torch.testing.assert_close(logp, expected.double(), rtol=1e-5, atol=1e-5)


def test_early_layers_stop_the_forward_pass(images):
    """Units of conv1 only: ip2 never runs (its hook would fire otherwise)."""
    clf = load_model("unit:conv1.0:lenet-mnist")
    calls = []
    clf.module.net.ip2.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        clf.module(images.float() / 255)
    assert calls == []


@pytest.mark.parametrize("spec, fragment", [
    ("unit:conv9.1:lenet-mnist", "no layer 'conv9'"),
    ("unit:conv2.50:lenet-mnist", "50 channels (0..49); no channel 50"),
    ("unit:ip2.10:lenet-mnist", "no channel 10"),
    ("unit:conv2.1:no-such-model", "unknown model"),
    ("unit:conv2.1", "needs units and a model"),
    ("unit:conv2.1:unit:conv2.2:lenet-mnist", "not another unit model"),
])
def test_bad_specs_are_clear_errors(spec, fragment):
    with pytest.raises(EvofoolError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_model(spec)


def test_bad_unit_spec_on_the_cli_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--model", "unit:conv2.77:lenet-mnist", "--generations", "1",
                                      "--out", str(tmp_path / "r"), "--quiet", "--no-gallery"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no channel 77" in lines[0]
    assert "Traceback" not in result.output


def test_activation_maximisation_run_end_to_end(unit_run):
    """A ``unit:`` run raises each unit's activation; champions score as saved."""
    out = unit_run
    doc = json.loads((out / "champions.json").read_text())
    champions = doc["champions"]
    assert doc["fitness_kind"] == "score"
    assert [c["name"] for c in champions] == ["conv2.5", "conv2.7", "ip1.42"]
    from evofool.imageio import load_image

    clf = load_model(RunFolder.open(out).config().model)
    batch = torch.stack([load_image(out / c["file"], (1, 28, 28)) for c in champions])
    rescored = BatchEvaluator(clf, device="cpu").log_probs(batch)
    # The saved 8-bit champion scores what champions.json says, for its own unit...
    for k, c in enumerate(champions):
        assert rescored[k, k].item() == pytest.approx(c["activation"], rel=1e-5, abs=1e-5)
    # ... and evolution raised every unit above the best of the random first generation
    # (three cells: the log's min, median and max are all of their values, sorted).
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    for key in ("min", "median", "max"):
        assert log[-1][key] > log[0][key], (key, log[0], log[-1])
    assert sorted(c["activation"] for c in champions) == pytest.approx(
        [log[-1]["min"], log[-1]["median"], log[-1]["max"]])


def test_a_unit_run_reports_activations_not_confidences(unit_run):
    """champions.json and summary.json hold activations as activations: no confidence, no 99 % counts."""
    champions = json.loads((unit_run / "champions.json").read_text())["champions"]
    assert all("confidence" not in c and "log_prob" not in c for c in champions)
    summary = json.loads((unit_run / "summary.json").read_text())
    activations = sorted(c["activation"] for c in champions)
    assert summary["fitness_kind"] == "score" and "median_confidence" not in summary
    assert summary["median_activation"] == pytest.approx(activations[1])
    assert summary["max_activation"] == pytest.approx(activations[-1])
    assert summary["n99"] is summary["n9999"] is summary["all_9999_at"] is None


def test_a_unit_run_on_the_command_line_ends_with_its_activations(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--model", "unit:conv2.5:lenet-mnist", "--generations", "3",
                                      "--population", "20", "--out", str(tmp_path / "u"), "--quiet",
                                      "--no-gallery"])
    assert result.exit_code == 0, (result.output, result.exception)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("1 units: median activation ") and "%" not in last and "run folder:" in last


# --- what a unit run refuses or maps: its values are activations, not confidences ----------------

UNIT_ARGS = ("--model", "unit:conv2.5,conv2.7,ip1.42:lenet-mnist", "--population", 20, "--seed", 1,
             "--quiet", "--no-gallery")


def note_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


def test_stop_at_is_refused_for_a_unit_run_on_start_and_on_resume(tmp_path):
    from fault_helpers import invoke, one_line_error

    out = tmp_path / "u"
    one_line_error(invoke("run", *UNIT_ARGS, "--generations", 2, "--stop-at", 0.5, "--out", out),
                   "--stop-at is a confidence", "unit: run reports raw activations")
    assert not (out / "config.json").exists()  # refused before a run folder is made
    result = invoke("run", *UNIT_ARGS, "--generations", 2, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    one_line_error(invoke("run", "--resume", out, "--generations", 3, "--stop-at", 0.5, "--quiet", "--no-gallery"),
                   "--stop-at is a confidence")
    assert json.loads((out / "summary.json").read_text())["generation"] == 2  # nothing ran


def test_a_unit_run_selects_parents_uniformly_says_so_and_resumes_the_same(tmp_path):
    """``lagging`` (the default) compares champions to --focus-below, a confidence: a unit run
    selects uniformly instead, keeps ``lagging`` in its config (its hash), and a resume maps it again."""
    from fault_helpers import invoke
    from resume_helpers import read_log, without_timing

    from evofool import checkpoint
    from evofool.job import LAGGING_UNITS_NOTE

    def run(name: str, generations: int, *extra):
        result = invoke("run", *UNIT_ARGS, "--generations", generations, "--out", tmp_path / name, *extra)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    assert note_lines(run("lagging", 4).stderr) == [LAGGING_UNITS_NOTE]
    assert note_lines(run("uniform", 4, "--selection", "uniform").stderr) == []
    doc = json.loads((tmp_path / "lagging" / "config.json").read_text())
    assert doc["config"]["selection"] == "lagging" and doc["selection_resolved"] == "uniform"
    run("resumed", 2)
    resumed = invoke("resume", tmp_path / "resumed", "--generations", 4, "--quiet", "--no-gallery")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert note_lines(resumed.stderr) == [LAGGING_UNITS_NOTE]
    _, uniform, _ = checkpoint.load(tmp_path / "uniform")
    for name in ("lagging", "resumed"):
        _, arrays, _ = checkpoint.load(tmp_path / name)
        assert sorted(arrays) == sorted(uniform)
        for key in uniform:
            assert arrays[key].tobytes() == uniform[key].tobytes(), (name, key)
        assert without_timing(read_log(tmp_path / name)) == without_timing(read_log(tmp_path / "uniform"))
