"""Odd models through the real CLI: NaN/inf outputs and outputs that fit only batch 1.

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
