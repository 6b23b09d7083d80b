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
