"""Shared pytest fixtures (keep this file small and generic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_mnist_dir() -> Path | None:
    """``$EVOFOOL_MNIST_DIR``, else ``shared/data/mnist`` beside the repository, if present."""
    env = os.environ.get("EVOFOOL_MNIST_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "mnist"
    return candidate if candidate.is_dir() and any(candidate.glob("t10k-images*")) else None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST idx folder; skips the test where it is absent."""
    found = find_mnist_dir()
    if found is None:
        pytest.skip("MNIST idx files not found: set EVOFOOL_MNIST_DIR or put them in "
                    f"{REPO_ROOT.parent / 'shared/data/mnist'}")
    return found


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path):
    """The 10k MNIST test split: ``(uint8 N×28×28, int64 N)``."""
    from evofool.data import load_idx_dataset

    return load_idx_dataset(mnist_dir, "test")


@pytest.fixture(scope="session", autouse=True)
def onnx_export_cache(tmp_path_factory):
    """ONNX exports (``--runtime auto``) go to a folder of this test session, not ``~/.cache``.

    Set in the environment, so CLI subprocesses started by the tests use it too; a value the
    caller set (``EVOFOOL_CACHE=...``) is kept.
    """
    if "EVOFOOL_CACHE" in os.environ:
        yield Path(os.environ["EVOFOOL_CACHE"])
        return
    path = tmp_path_factory.mktemp("evofool-cache")
    os.environ["EVOFOOL_CACHE"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("EVOFOOL_CACHE", None)


@pytest.fixture(scope="module")
def one_thread():
    """One torch (and so ONNX Runtime) thread for a module's tests: tiny batches gain nothing
    from a second thread, which only spins against the other jobs on a shared machine.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.

    ``OMP_NUM_THREADS=1`` too: a run in process (``--threads 0``, the default) takes its
    threads from it (``evofool.scoring.resolve_threads``), else from every CPU.
    """
    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


UNIT_SPEC = "unit:conv2.5,conv2.7,ip1.42:lenet-mnist"


@pytest.fixture(scope="session")
def unit_run(tmp_path_factory) -> Path:
    """A finished activation-maximisation run (``UNIT_SPEC``, 30 generations of 60, seed 3),
    made in process through ``Job`` as ``evofool run`` makes it (no live gallery)."""
    import torch

    from evofool.config import RunConfig
    from evofool.job import Job

    out = tmp_path_factory.mktemp("units") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches; the cores are shared
    try:
        config = RunConfig(model=UNIT_SPEC, generations=30, population=60, seed=3)
        assert Job.start(config, out, progress=False).run() == 0
    finally:
        torch.set_num_threads(before)
    return out
