"""Reader for the idx(.gz) files MNIST and Fashion-MNIST are distributed as.

Format (big-endian): two zero bytes, a type code, the number of dimensions, one
uint32 per dimension, then the raw values.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from evofool.errors import EvofoolError

# idx type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> file-name prefix used by the official distributions.
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one idx file (plain or gzip-compressed) into a NumPy array.

    Raises:
        EvofoolError: The file is missing, truncated or not an idx file.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise EvofoolError(f"{path} does not exist") from None
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError
        raise EvofoolError(f"{path} is not a readable idx file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise EvofoolError(f"{path} is not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise EvofoolError(f"{path} is truncated (incomplete header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[raw[2]]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise EvofoolError(f"{path} is corrupt: {len(raw)} bytes, expected {expected} for shape {shape}")
    # astype copies (frombuffer is read-only) and converts to native byte order.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    """The first existing spelling of an idx file (``.gz`` or not, ``-`` or ``.`` before idx)."""
    for sep in ("-", "."):
        for ext in (".gz", ""):
            candidate = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}"
            if candidate.is_file():
                return candidate
    raise EvofoolError(f"{folder} has no {prefix}-{kind}-idx{ndim}-ubyte(.gz) file")


def load_idx_dataset(folder: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Loads one split of an MNIST-style dataset folder.

    Args:
        folder: Folder holding ``train-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, ...
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: a uint8 ``N×H×W`` tensor and an int64 ``N`` tensor.

    Raises:
        EvofoolError: The folder or a file is missing or corrupt, or the counts disagree.
    """
    if split not in _PREFIX:
        raise EvofoolError(f"unknown split {split!r}; use 'train' or 'test'")
    folder = Path(folder)
    if not folder.is_dir():
        raise EvofoolError(f"dataset folder {folder} does not exist")
    images = read_idx(_find(folder, _PREFIX[split], "images", 3))
    labels = read_idx(_find(folder, _PREFIX[split], "labels", 1))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise EvofoolError(f"{folder}: {split} images must be uint8 N×H×W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise EvofoolError(f"{folder}: {len(images)} {split} images but labels of shape {labels.shape}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
