"""The idx(.gz) reader: real MNIST, and clear errors for missing or corrupt folders."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from evofool.data import load_idx_dataset, read_idx
from evofool.errors import EvofoolError


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_real_mnist(mnist_dir):
    x, y = load_idx_dataset(mnist_dir, "test")
    assert x.shape == (10_000, 28, 28) and str(x.dtype) == "torch.uint8"
    assert y.shape == (10_000,) and str(y.dtype) == "torch.int64"
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first MNIST test labels
    assert int(x.max()) == 255 and int(x.min()) == 0


def test_small_folder_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 10], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, compress=False)
    x, y = load_idx_dataset(tmp_path, "train")
    assert np.array_equal(x.numpy(), images) and y.tolist() == labels.tolist()


def test_missing_folder(tmp_path):
    with pytest.raises(EvofoolError, match="does not exist"):
        load_idx_dataset(tmp_path / "nowhere")


def test_folder_without_files(tmp_path):
    with pytest.raises(EvofoolError, match="has no t10k-images-idx3-ubyte"):
        load_idx_dataset(tmp_path, "test")


def test_bad_split(tmp_path):
    with pytest.raises(EvofoolError, match="unknown split"):
        load_idx_dataset(tmp_path, "valid")


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "a-idx1-ubyte"
    write_idx(good, np.arange(10, dtype=np.uint8), compress=False)
    truncated = tmp_path / "b-idx1-ubyte"
    truncated.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(EvofoolError, match="corrupt"):
        read_idx(truncated)
    not_idx = tmp_path / "c-idx1-ubyte"
    not_idx.write_bytes(b"PK\x03\x04whatever")
    with pytest.raises(EvofoolError, match="bad magic"):
        read_idx(not_idx)
    bad_gz = tmp_path / "d-idx1-ubyte.gz"
    bad_gz.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(EvofoolError, match="not a readable idx file"):
        read_idx(bad_gz)


def test_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8))
    with pytest.raises(EvofoolError, match="3 test images"):
        load_idx_dataset(tmp_path, "test")
