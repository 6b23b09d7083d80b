"""Fixtures for the gallery tests: a real (short) MNIST run and synthetic run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evofool.config import RunConfig
from evofool.runfolder import RunFolder

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = REPO_ROOT / "evofool" / "models" / "weights" / "lenet-mnist.safetensors"

_WORDS = ["great white", "shark", "tabby", "cat", "crane (bird)", "jack-o'-lantern", "Granny Smith", "lab coat",
          "<b>bold</b> & co", "école", "steel arch bridge", "sea anemone", "x"]


def fake_class_names(n: int) -> list[str]:
    """``n`` distinct names, some long, some with HTML/CSV-special or non-ASCII characters."""
    return [f"{_WORDS[i % len(_WORDS)]} {_WORDS[(i * 7 + 3) % len(_WORDS)]} {i}" for i in range(n)]


def make_fake_run(path: Path, num_classes: int, shape: tuple[int, int, int] = (3, 32, 32),
                  generations: int = 40, seed: int = 0, model: str = "lenet:/nonexistent.safetensors") -> RunFolder:
    """A run folder written directly (no model, no evolution): noise images, spread confidences."""
    rng = np.random.default_rng(seed)
    names = fake_class_names(num_classes)
    config = RunConfig(model=model, population=100, generations=generations, seed=seed)
    folder = RunFolder.create(path, config, names)
    images = rng.integers(0, 256, size=(num_classes, *shape), dtype=np.uint8)
    logit10 = rng.uniform(-1.0, 8.0, size=num_classes)  # 10 % .. 1 - 1e-8
    log_probs = -np.log1p(10.0 ** -logit10)
    generations_found = rng.integers(1, generations + 1, size=num_classes)
    folder.write_champions(images, np.exp(log_probs), log_probs, generations_found, names)
    with open(folder.log_path, "w") as log:
        for g in range(1, generations + 1):
            t = g / generations
            conf = 1 / (1 + 10.0 ** -(np.quantile(logit10, [0.0, 0.5, 1.0]) * t))
            log.write(json.dumps({"generation": g, "evaluations": 100 * g, "improved": num_classes // 3,
                                  "min": float(conf[0]), "median": float(conf[1]), "max": float(conf[2]),
                                  "n99": int(np.sum(logit10 * t >= 2)), "n9999": int(np.sum(logit10 * t >= 4)),
                                  "evals_per_s": 1000.0, "seconds": 0.1}) + "\n")
    folder.write_summary({"generation": generations, "evaluations": 100 * generations, "classes": num_classes})
    return folder


def model_spec(tmp_dir: Path) -> str:
    """The shipped MNIST LeNet when its weights exist, else a random-init LeNet saved under ``tmp_dir``."""
    if SHIPPED_WEIGHTS.is_file():
        return "lenet-mnist"
    import torch

    from evofool.models.lenet import LeNet, save_lenet

    torch.manual_seed(0)
    path = tmp_dir / "rand-lenet.safetensors"
    save_lenet(LeNet(), path)
    return f"lenet:{path}"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m evofool ARGS`` in a subprocess (the real CLI)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "evofool", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=env)


@pytest.fixture(scope="session")
def mnist_model(tmp_path_factory) -> str:
    """Model spec for the MNIST runs (see ``model_spec``)."""
    return model_spec(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory, mnist_model) -> Path:
    """A finished real run: 15 generations of 100 on MNIST, no live gallery."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    proc = run_cli("run", "--model", mnist_model, "--generations", "15", "--population", "100",
                   "--out", str(out), "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def mnist_gallery(mnist_run) -> tuple[Path, subprocess.CompletedProcess]:
    """``evofool export RUN --verify`` of the MNIST run: (gallery folder, finished process)."""
    proc = run_cli("export", str(mnist_run), "--verify")
    return mnist_run / "gallery", proc


@pytest.fixture(scope="session")
def cli_run():
    """``run_cli``: the real CLI in a subprocess."""
    return run_cli


@pytest.fixture(scope="session")
def fake_run():
    """``make_fake_run``: a synthetic run folder written directly."""
    return make_fake_run
