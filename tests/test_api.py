"""The Python API: the README's example runs as written; its folder resumes and exports with the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import evofool
from evofool import checkpoint
from evofool.errors import EvofoolError
from evofool.models import load_model
from conftest import REPO_ROOT
from fault_helpers import evofool as evofool_cli


def readme_api_example() -> str:
    """The ```python block of the README's "Python API" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_its_folder_resumes_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_api_example(), "README.md", "exec"), scope)
    result, run = scope["result"], scope["run"]
    assert result.class_names == [str(d) for d in range(10)] and result.fitness == "probability"
    assert result.images.shape == (10, 1, 28, 28) and result.images.dtype == np.uint8
    assert result.confidences.shape == (10,) and np.all((result.confidences > 0) & (result.confidences <= 1))
    assert result.generation == 30 and result.evaluations == 30 * 100
    np.testing.assert_array_equal(run.images, result.images)
    np.testing.assert_array_equal(run.confidences, result.confidences)
    assert (tmp_path / "runs/api-demo-gallery/index.html").is_file()
    # The in-memory module was saved with the run, so the CLI can continue it...
    folder = tmp_path / "runs/api-demo"
    proc = evofool_cli("resume", folder, "--generations", "40", "--quiet", "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resumed = evofool.load_run(folder)
    assert resumed.generation == 40 and np.all(resumed.confidences >= result.confidences)
    proc = evofool_cli("export", folder, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "gallery/manifest.json").read_text())["classes"]
    # ...and what it continued equals one straight 40-generation run of the same module.
    straight = evofool.evolve(load_model("lenet-mnist").module, input_shape=(1, 28, 28),
                              class_names=[str(d) for d in range(10)], generations=40, population=100,
                              seed=0, out=tmp_path / "straight", progress=False)
    np.testing.assert_array_equal(straight.images, resumed.images)
    _, a, _ = checkpoint.load(folder)
    _, b, _ = checkpoint.load(tmp_path / "straight")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_spec_string_and_out_none_give_a_temporary_folder_that_lives_with_the_result():
    result = evofool.evolve("lenet-mnist", encoding="cppn", generations=3, population=20, seed=1,
                            progress=False)
    folder = result.folder
    assert folder.is_dir() and result.generation == 3
    index = result.save_gallery(folder.parent / "gallery")
    assert index.is_file()
    del result
    import gc

    gc.collect()
    assert not folder.exists()


def test_an_in_memory_module_without_out_is_scored_as_it_is():
    class Doubled(torch.nn.Module):  # not traceable-only: any Python the module likes
        def __init__(self) -> None:
            super().__init__()
            self.net = load_model("lenet-mnist").module

        def forward(self, x):
            return self.net(x) * 2 if x.shape[0] > 0 else self.net(x)

    result = evofool.evolve(Doubled(), input_shape=(1, 28, 28), class_names=list("abcdefghij"),
                            generations=2, population=20, progress=False, selection="uniform")
    assert result.class_names == list("abcdefghij") and result.generation == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"model": torch.nn.Identity()}, "needs input_shape"),
    ({"model": "lenet-mnist", "input_shape": (1, 28, 28)}, "are for an nn.Module"),
    ({"model": 3}, "spec string or a torch nn.Module"),
    ({"model": "lenet-mnist", "population": 0}, "population"),
    ({"model": "lenet-mnist", "colour": "red"}, "colour"),
])
def test_bad_arguments_are_one_clear_error(kwargs, message):
    with pytest.raises(EvofoolError, match=message):
        evofool.evolve(progress=False, generations=1, **kwargs)


class BatchOfOne(torch.nn.Module):
    """Works on batch 1 only (reshapes to one row)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.reshape(1, 64))


def small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


@pytest.mark.parametrize("make, kwargs, message", [
    (BatchOfOne, {}, r"module:BatchOfOne fails on a batch of 100 images of 1×8×8 \(shape '\[1, 64\]' is invalid"),
    (small_net, {"input_shape": (1, 9, 9)}, r"fails on a batch of 100 images of 1×9×9 \(mat1 and mat2"),
    (small_net, {"preprocess": lambda x: 1 / 0}, r"fails on a batch .* \(division by zero\)"),
    (small_net, {"outputs": "probs"}, "declares its outputs probabilities, but returned values from"),
    (lambda: small_net().to("meta"), {}, "weights are on the meta device"),
    (small_net, {"input_shape": (3, 100000, 100000), "out": "OUT"}, r"^input_shape\[1\] must be an integer from 1"),
    (small_net, {"input_shape": "1,8,8"}, "input_shape must be integers"),
    (small_net, {"input_shape": 8}, "input_shape must be a sequence of integers"),
    (small_net, {"class_names": "0123456789"}, "class_names must be a list of names, not str"),
    (small_net, {"out": "FILE/sub"}, "cannot make the run folder .*FILE/sub: Not a directory"),
])
def test_odd_modules_and_arguments_are_one_clear_error(tmp_path, make, kwargs, message):
    """A module that fails in the forward pass (batch 1 only, wrong input shape, a failing
    preprocess), logits declared as probabilities, weights without data, a shape too large
    to trace, arguments of the wrong type, an out= that cannot be a folder: an EvofoolError
    naming it, nothing half-made (no traceback from inside torch, no 240 GB allocation)."""
    (tmp_path / "FILE").write_text("not a folder")
    args = {"input_shape": (1, 8, 8), "class_names": [str(k) for k in range(10)], "runtime": "torch", **kwargs}
    if "out" in args:
        args["out"] = str(tmp_path / args["out"])
    with pytest.raises(EvofoolError, match=message):
        evofool.evolve(make(), progress=False, generations=1, population=10, device="cpu", **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def score_model(arg: str, spec: str, device):
    """A registry loader (``PrefixLoader(__name__, "score_model", ...)``) of two raw unit scores."""
    from evofool.models.base import Classifier

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    return Classifier(spec, module, (1, 28, 28), ["u0", "u1"], outputs="scores")


def test_load_run_reads_the_kind_of_fitness_from_the_champions_not_the_spec(monkeypatch):
    """A model of raw scores whose spec does not start with ``unit:``: its run holds activations."""
    from evofool.models import PREFIX_LOADERS, PrefixLoader

    monkeypatch.setitem(PREFIX_LOADERS, "fakescores", PrefixLoader(__name__, "score_model", "fakescores:X", "test"))
    result = evofool.evolve("fakescores:x", generations=2, population=20, seed=0, progress=False, runtime="torch")
    champions = json.loads((result.folder / "champions.json").read_text())["champions"]
    assert result.fitness == "activation"
    np.testing.assert_array_equal(result.confidences, [c["activation"] for c in champions])


def test_resume_continues_a_run_to_the_bits_of_one_never_stopped(tmp_path):
    """``evofool.resume`` (the CLI's ``resume`` in Python): an evolve(out=) run of 4 generations
    continued to 9 ends with the champions and checkpoint of a straight 9-generation run."""
    args = dict(encoding="cppn", population=30, seed=2, progress=False, checkpoint_every=2)
    evofool.evolve("lenet-mnist", generations=4, out=tmp_path / "a", **args)
    resumed = evofool.resume(tmp_path / "a", generations=9, progress=False, threads=1)
    straight = evofool.evolve("lenet-mnist", generations=9, out=tmp_path / "b", **args)
    assert resumed.generation == straight.generation == 9
    np.testing.assert_array_equal(resumed.images, straight.images)
    np.testing.assert_array_equal(resumed.confidences, straight.confidences)
    _, a, _ = checkpoint.load(tmp_path / "a")
    _, b, _ = checkpoint.load(tmp_path / "b")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("kwargs, message", [
    ({"generations": 2}, "3 generations are done already"),
    ({"generations": "9"}, "generations must be an integer"),
    ({"seed": 1}, "resume cannot change seed; it takes generations, device, runtime, threads, ray, workers"),
    ({"runtime": "fast"}, "runtime must be one of auto, torch, onnxruntime"),
    ({"path": "nothing-here"}, "is not an evofool run folder"),
])
def test_resume_refuses_bad_arguments_in_one_error_and_leaves_the_folder(tmp_path, kwargs, message):
    folder = tmp_path / "run"
    evofool.evolve("lenet-mnist", generations=3, population=20, progress=False, out=folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    path = tmp_path / kwargs.pop("path", "run")
    with pytest.raises(EvofoolError, match=message):
        evofool.resume(path, progress=False, **kwargs)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_evolve_runs_outside_the_main_thread():
    """Signal handlers can be set only from the main thread: a run in a notebook's background
    thread raised ValueError from signal.signal before its first generation."""
    import threading

    results: list = []
    thread = threading.Thread(target=lambda: results.append(
        evofool.evolve("lenet-mnist", generations=2, population=20, progress=False)))
    thread.start()
    thread.join()
    assert len(results) == 1 and results[0].generation == 2


def test_an_interrupted_evolve_in_a_temporary_folder_says_it_cannot_be_resumed(tmp_path):
    """SIGINT stops evolve() without out= at the end of a generation; its folder went with the
    call, so the error says pass out=, and nothing points at the removed folder."""
    import signal
    import subprocess
    import sys
    import time

    from resume_helpers import env

    code = ("import evofool, sys\n"
            "try:\n"
            "    evofool.evolve('lenet-mnist', generations=100000, population=50, seed=4, progress=False)\n"
            "except evofool.api.EvofoolError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n")
    temp = tmp_path / "temp"  # where tempfile puts the run's folder, to see its generations
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**env(), "TMPDIR": str(temp)}, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            log.read_bytes().count(b"\n") >= 3 for log in temp.glob("evofool-*/run/log.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "pass out=" in out and "evofool resume" not in out + err, (out, err)
    assert not list(temp.glob("evofool-*"))  # the temporary folder went with the call


def test_an_interrupted_evolve_names_how_to_resume_it_and_resume_finishes_it(tmp_path):
    """SIGINT (a notebook's interrupt) stops evolve(out=) at the end of a generation with a
    checkpoint and an error naming evofool.resume; resuming ends where a straight run ends."""
    import signal
    import subprocess
    import sys
    import time

    from resume_helpers import env

    code = ("import evofool, sys\n"
            "try:\n"
            f"    evofool.evolve('lenet-mnist', generations=100000, population=50, seed=4, progress=False,\n"
            f"                   checkpoint_every=3, out={str(tmp_path / 'run')!r})\n"
            "except evofool.api.EvofoolError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=tmp_path)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while (not log.exists() or log.read_bytes().count(b"\n") < 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert f"evofool.resume({str(tmp_path / 'run')!r})" in out and "checkpoint saved" in out, out
    assert "interrupted at generation" not in err  # one message: the error, not the CLI's line too
    done = evofool.load_run(tmp_path / "run").generation
    resumed = evofool.resume(tmp_path / "run", generations=done + 4, progress=False)
    straight = evofool.evolve("lenet-mnist", generations=done + 4, population=50, seed=4, progress=False,
                              checkpoint_every=3, out=tmp_path / "straight")
    np.testing.assert_array_equal(resumed.images, straight.images)
    np.testing.assert_array_equal(resumed.confidences, straight.confidences)
