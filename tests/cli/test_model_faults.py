"""Odd models through the real CLI: NaN/inf or complex outputs, outputs that fit only batch 1.

Each case: exit 2, one ``error:`` line naming the model, no traceback, and every file that
existed before (the run folder's included) unchanged.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from evofool.models import load_model
from fault_helpers import assert_one_line_error, assert_unchanged, evofool, snapshot
from evofool.imageio import save_png


class NaNUnlessBlank(torch.nn.Module):
    """LeNet's logits for a blank image (so a one-image probe passes), ``value`` for any other."""

    def __init__(self, net: torch.nn.Module, value: float) -> None:
        super().__init__()
        self.net, self.value = net, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        blank = x.flatten(1).abs().sum(dim=1, keepdim=True) == 0
        return torch.where(blank, logits, torch.full_like(logits, self.value))


class FirstRowOnly(torch.nn.Module):
    """Answers one row whatever the batch: a model written for batch 1."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:1]


def write_torchscript(module: torch.nn.Module, path) -> str:
    """A traced TorchScript file plus its sidecar; returns the model spec."""
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), torch.rand(2, 1, 28, 28))
    traced.save(str(path))
    path.with_name(path.name + ".json").write_text(json.dumps(
        {"input_shape": [1, 28, 28], "class_names": [str(i) for i in range(10)]}))
    return f"torchscript:{path}"


@pytest.fixture(scope="module")
def lenet_module():
    return load_model("lenet-mnist").module


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_answering_nan_is_refused_before_a_run_folder_exists(tmp_path, lenet_module, value):
    spec = write_torchscript(NaNUnlessBlank(lenet_module, value), tmp_path / "odd.pt")
    before = snapshot(tmp_path)
    proc = evofool("run", "--model", spec, "--generations", "5", "--population", "20",
                   "--out", tmp_path / "run", "--quiet", "--no-gallery", cwd=tmp_path)
    assert_one_line_error(proc, f"model {spec}", "NaN or infinite scores")
    assert not (tmp_path / "run").exists()
    assert_unchanged(before, tmp_path)


class NaNFromCall(torch.nn.Module):
    """LeNet until its ``start``-th forward pass, NaN from then on: a model that breaks mid-run."""

    def __init__(self, net: torch.nn.Module, start: int) -> None:
        super().__init__()
        self.net, self.start = net, start
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.net(x)
        if int(self.calls) >= self.start:
            return torch.full_like(logits, float("nan"))
        return logits


def test_a_model_turning_nan_mid_run_keeps_the_last_checkpoint(tmp_path, lenet_module):
    path = tmp_path / "late.pt"
    torch.jit.script(NaNFromCall(lenet_module, start=8).eval()).save(str(path))
    path.with_name(path.name + ".json").write_text(json.dumps(
        {"input_shape": [1, 28, 28], "class_names": [str(i) for i in range(10)]}))
    spec, out = f"torchscript:{path}", tmp_path / "run"
    proc = evofool("run", "--model", spec, "--generations", "20", "--population", "20", "--out", out,
                   "--checkpoint-every", "2", "--quiet", "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: model {spec} returned NaN"), proc.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert 0 < len(log) < 20 and all(r["min"] == r["min"] for r in log)  # no NaN was logged
    champions = json.loads((out / "champions.json").read_text())["champions"]
    assert all(0 <= c["confidence"] <= 1 for c in champions)
    # The folder is intact: a resume restores it and meets the model's NaN again, on one line.
    proc = evofool("resume", out, "--quiet", "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_classify_refuses_a_model_whose_output_fits_only_batch_1(tmp_path, lenet_module):
    spec = write_torchscript(FirstRowOnly(lenet_module), tmp_path / "single.pt")
    images = []
    for k in range(3):
        images.append(save_png(torch.full((1, 28, 28), 40 * k, dtype=torch.uint8), tmp_path / f"{k}.png"))
    before = snapshot(tmp_path)
    proc = evofool("classify", "--model", spec, *images, cwd=tmp_path)
    assert_one_line_error(proc, f"model {spec} returned shape (1, 10)", "expected (100, 10)")
    assert proc.stdout == ""  # no row printed for some images and silently none for others
    assert_unchanged(before, tmp_path)


class RaisesOnBatches(torch.nn.Module):
    """Fails inside forward on any batch but one image: reshapes to a single row."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(1, 1, 28, 28))


class RaisesAfter(torch.nn.Module):
    """LeNet for ``calls`` forward passes, then an error from inside the model."""

    def __init__(self, net: torch.nn.Module, calls: int) -> None:
        super().__init__()
        self.net, self.calls = net, calls
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        if bool(self.seen > self.calls):
            raise RuntimeError("boom inside forward")
        return self.net(x)


@pytest.mark.parametrize("command", ["run", "classify", "ascent", "ascent-with-bar"])
def test_a_model_that_raises_on_a_batch_is_one_line_naming_it(tmp_path, lenet_module, command):
    """A model whose forward raises on batches (written for one image): one line naming the
    model and the batch, before any run folder exists (not a traceback from inside it)."""
    spec = write_script(RaisesOnBatches(lenet_module), tmp_path / "b1.pt")
    image = save_png(torch.zeros(1, 28, 28, dtype=torch.uint8), tmp_path / "a.png")
    args = {"run": ["run", "--runtime", "torch", "--population", "20", "--generations", "1", "--out", "r",
                    "--quiet", "--no-gallery"],
            "classify": ["classify", image, image],
            "ascent": ["ascent", "--steps", "2", "--out", "r", "--quiet"],
            # with its progress bar: the bar used to be drawn before the model was probed
            "ascent-with-bar": ["ascent", "--steps", "2", "--out", "r"]}[command]
    before = snapshot(tmp_path)
    proc = evofool(*args, "--model", spec, cwd=tmp_path)
    assert_one_line_error(proc, f"model {spec} fails on a batch of", "shape '[1, 1, 28, 28]' is invalid")
    assert_unchanged(before, tmp_path)


def test_a_model_that_raises_mid_run_keeps_the_run_folder_resumable(tmp_path, lenet_module):
    """The probe passes, generations run, then the model raises: one line, and the folder's
    last checkpoint still resumes (here on to the end, with a model that works again)."""
    spec = write_script(RaisesAfter(lenet_module, 4), tmp_path / "late.pt")
    proc = evofool("run", "--model", spec, "--runtime", "torch", "--population", "20", "--generations", "6",
                   "--checkpoint-every", "1", "--out", "r", "--quiet", "--no-gallery", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines == ["run folder: r", lines[-1]] and lines[-1].startswith(f"error: model {spec} fails on a batch")
    assert "boom inside forward" in lines[-1]
    assert (tmp_path / "r" / "checkpoint.safetensors").is_file()
    write_script(RaisesAfter(lenet_module, 10**6), tmp_path / "late.pt")
    proc = evofool("resume", "r", "--quiet", "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["generation"] == 6


class Constant(torch.nn.Module):
    """The same logits for every image: its ONNX export has no input at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 10)


def test_a_model_that_ignores_its_input_runs_on_torch_with_a_note(tmp_path):
    """--runtime auto exports to ONNX; a graph without inputs cannot be fed, so the run scores
    with torch and says so in one note line (it was an IndexError)."""
    spec = write_script(Constant(), tmp_path / "const.pt")
    proc = evofool("run", "--model", spec, "--population", "20", "--generations", "1", "--out", "r", "--quiet",
                   "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "has 0 inputs" in notes[0] and notes[0].endswith("scoring with torch"), proc.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["runtime"] == "torch"


def write_script(module: torch.nn.Module, path) -> str:
    """``write_torchscript`` of a module whose control flow tracing cannot keep: scripted."""
    torch.jit.script(module.eval()).save(str(path))
    path.with_name(path.name + ".json").write_text(json.dumps(
        {"input_shape": [1, 28, 28], "class_names": [str(i) for i in range(10)]}))
    return f"torchscript:{path}"


def test_classify_prints_exactly_one_row_per_image(tmp_path):
    images = [save_png(torch.full((1, 28, 28), 60 * k, dtype=torch.uint8), tmp_path / f"{k}.png")
              for k in range(3)]
    proc = evofool("classify", "--json", "--top", "2", *images, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in images]
    assert all(len(r["top"]) == 2 and 0 <= r["top"][0]["confidence"] <= 1 for r in rows)


def test_classify_answers_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    proc = evofool("classify", fifo, cwd=tmp_path, timeout=30)
    assert_one_line_error(proc, "named pipe (FIFO)")


class ComplexLogits(torch.nn.Module):
    """LeNet's logits as complex numbers (``real=True``: their magnitude, through a complex op)."""

    def __init__(self, net: torch.nn.Module, real: bool) -> None:
        super().__init__()
        self.net, self.real = net, real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        z = torch.complex(logits, torch.zeros_like(logits))
        return z.abs() if self.real else z


@pytest.mark.parametrize("command", ["run", "classify", "ascent"])
def test_a_model_answering_complex_numbers_is_refused(tmp_path, lenet_module, command):
    """Complex scores were cast to their real part with a torch warning, and the run went on;
    now one line, before any run folder exists."""
    spec = write_script(ComplexLogits(lenet_module, real=False), tmp_path / "z.pt")
    image = save_png(torch.zeros(1, 28, 28, dtype=torch.uint8), tmp_path / "a.png")
    args = {"run": ["run", "--population", "20", "--generations", "1", "--out", "r", "--quiet", "--no-gallery"],
            "classify": ["classify", image],
            "ascent": ["ascent", "--steps", "2", "--out", "r", "--quiet"]}[command]
    before = snapshot(tmp_path)
    proc = evofool(*args, "--model", spec, cwd=tmp_path)
    assert_one_line_error(proc, f"model {spec} returned complex64 scores", "real numbers")
    assert_unchanged(before, tmp_path)


def test_a_failed_onnx_export_prints_only_its_note(tmp_path, lenet_module):
    """An operator ONNX cannot export (aten::complex): the run scores with torch after one note
    line; the exporter's own log of the whole graph (C++, on file descriptor 1) stays out of
    the command's output."""
    spec = write_script(ComplexLogits(lenet_module, real=True), tmp_path / "abs.pt")
    proc = evofool("run", "--model", spec, "--population", "20", "--generations", "1", "--out", "r", "--quiet",
                   "--no-gallery", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "aten::complex" in notes[0] and notes[0].endswith("scoring with torch"), proc.stderr
    assert "graph" not in proc.stdout + proc.stderr, proc.stdout
    assert "classes ≥ 99.99 %" in proc.stdout, proc.stdout
