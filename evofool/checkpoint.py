"""Checkpoints: one safetensors file, no pickle, written atomically, checksummed.

A checkpoint holds named NumPy arrays (archive, genomes, RNG byte states) as
safetensors tensors and a JSON ``state`` document in the safetensors header.
Loading parses JSON and raw tensor bytes only, so a file from someone else cannot
run code. A sha256 over the state and every array detects truncation, bit rot and
hand edits. Writes go to a new temp file that is fsynced and renamed over the current
checkpoint, whose previous version is kept as ``checkpoint.prev.safetensors``; reads take
regular files of at most ``safefs.CHECKPOINT_LIMIT`` bytes only (see ``evofool.safefs``).
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from evofool import safefs
from evofool.errors import EvofoolError

CURRENT = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"
FORMAT = "evofool-checkpoint/1"


def _digest(state_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(state_json.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"|{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def encode(state: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of a checkpoint file for ``state`` (JSON-able) and ``arrays``."""
    state_json = json.dumps(state, sort_keys=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = {"format": FORMAT, "state": state_json, "sha256": _digest(state_json, arrays)}
    return st_save(arrays, metadata=meta)


def decode(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Parses and verifies checkpoint bytes.

    Raises:
        ValueError: for anything that is not an intact evofool checkpoint.
    """
    if len(blob) < 8:
        raise ValueError("file is truncated")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8 or header_len > 100_000_000:
        raise ValueError("file is truncated or not a safetensors file")
    try:
        header = json.loads(blob[8:8 + header_len])
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ValueError("header is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ValueError("not an evofool checkpoint")
    try:
        arrays = st_load(blob)
        state = json.loads(meta["state"])
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise ValueError(f"corrupt data ({exc})") from None
    if _digest(meta["state"], arrays) != meta.get("sha256"):
        raise ValueError("checksum mismatch (file corrupted or edited)")
    return state, arrays


def save(run_dir: str | Path, state: dict, arrays: dict[str, np.ndarray], rotate: bool = True) -> Path:
    """Atomically writes the run's checkpoint, keeping the previous one.

    Args:
        rotate: Keep the current checkpoint as ``checkpoint.prev.safetensors``. False
            replaces the current one and leaves the previous one alone (used when the
            current one is damaged and the previous one is the only intact checkpoint).

    Returns:
        The path of the new checkpoint.
    """
    run_dir = Path(run_dir)
    return safefs.write_bytes_atomic(run_dir / CURRENT, encode(state, arrays), root=run_dir, durable=True,
                                     previous=PREVIOUS if rotate else None)


def read_state(path: str | Path) -> dict:
    """The verified ``state`` document of one checkpoint file.

    Raises:
        ValueError: not an intact evofool checkpoint.
        EvofoolError: a link, FIFO, device... or a file larger than any checkpoint.
    """
    return decode(safefs.read_bounded(path, safefs.CHECKPOINT_LIMIT))[0]


def load(run_dir: str | Path) -> tuple[dict, dict[str, np.ndarray], Path]:
    """Loads the newest intact checkpoint of a run folder.

    Falls back to the previous checkpoint, with a warning, where the current one
    is missing or damaged.

    Raises:
        EvofoolError: when no intact checkpoint remains, or a checkpoint is a link, a FIFO,
            a device or larger than any checkpoint.
    """
    run_dir = Path(run_dir)
    problems = []
    for name in (CURRENT, PREVIOUS):
        path = run_dir / name
        try:
            # A link, FIFO or device is refused at once (EvofoolError), never read.
            blob = safefs.read_bounded(path, safefs.CHECKPOINT_LIMIT, root=run_dir)
        except FileNotFoundError:
            problems.append(f"{name}: missing")
            continue
        try:
            state, arrays = decode(blob)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if problems and name == PREVIOUS and any(p.startswith(CURRENT) and "missing" not in p
                                                 for p in problems):
            warnings.warn(f"{run_dir / CURRENT} is damaged ({problems[0].split(': ', 1)[1]}); "
                          f"using the previous checkpoint", stacklevel=2)
        return state, arrays, path
    raise EvofoolError(f"no valid checkpoint in {run_dir} ({'; '.join(problems)})")
