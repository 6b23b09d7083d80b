"""``evofool.checkpoint`` in-process: format, checksum, atomic rotation, fallback, no pickle, disk full."""

from __future__ import annotations

import errno
import os
import pickle
import struct
import time

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from evofool import checkpoint, safefs
from evofool.errors import EvofoolError


def make(generation: int) -> tuple[dict, dict[str, np.ndarray]]:
    rng = np.random.default_rng(generation)
    state = {"engine": {"generation": generation, "evaluations": 50 * generation,
                        "rng": {"state": int(rng.integers(1 << 62))}},
             "log_bytes": 1234 * generation, "note": "ünïcode ✓"}
    arrays = {"archive.log_probs": rng.normal(size=10),
              "archive.images": rng.integers(0, 256, (10, 1, 28, 28), dtype=np.uint8),
              "archive.generation": np.arange(10, dtype=np.int64),
              "rng.torch_cpu": rng.integers(0, 256, 5056, dtype=np.uint8)}
    return state, arrays


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
        assert a[key].tobytes() == b[key].tobytes(), key


def header_len(blob: bytes) -> int:
    return struct.unpack("<Q", blob[:8])[0]


def test_round_trip_is_exact():
    state, arrays = make(3)
    got_state, got_arrays = checkpoint.decode(checkpoint.encode(state, arrays))
    assert got_state == state
    assert_same(got_arrays, arrays)


def test_same_content_decodes_identically():
    """The bytes may differ (safetensors writes metadata keys in hash order); the content may not."""
    a, b = (checkpoint.decode(checkpoint.encode(*make(4))) for _ in range(2))
    assert a[0] == b[0]
    assert_same(a[1], b[1])


def test_save_rotates_and_load_returns_newest(tmp_path):
    checkpoint.save(tmp_path, *make(1))
    assert not (tmp_path / checkpoint.PREVIOUS).exists()
    checkpoint.save(tmp_path, *make(2))
    state, arrays, path = checkpoint.load(tmp_path)
    assert path.name == checkpoint.CURRENT and state["engine"]["generation"] == 2
    assert_same(arrays, make(2)[1])
    assert checkpoint.decode((tmp_path / checkpoint.PREVIOUS).read_bytes())[0]["engine"]["generation"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.CURRENT, checkpoint.PREVIOUS])


def test_save_without_rotation_keeps_previous(tmp_path):
    checkpoint.save(tmp_path, *make(1))
    checkpoint.save(tmp_path, *make(2))
    (tmp_path / checkpoint.CURRENT).write_bytes(b"damaged")
    checkpoint.save(tmp_path, *make(3), rotate=False)
    assert checkpoint.load(tmp_path)[0]["engine"]["generation"] == 3
    assert checkpoint.decode((tmp_path / checkpoint.PREVIOUS).read_bytes())[0]["engine"]["generation"] == 1


def _truncate(blob: bytes) -> bytes:
    return blob[: len(blob) - 100]


def _flip_data(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[8 + header_len(blob) + 500] ^= 0x01  # one bit of one tensor
    return bytes(b)


def _edit_header(blob: bytes) -> bytes:
    n = header_len(blob)
    header = blob[8:8 + n]
    i = header.index(b"evaluations")
    j = i + header[i:].index(b"150")
    edited = header[:j] + b"990" + header[j + 3:]
    assert len(edited) == n
    return blob[:8] + edited + blob[8 + n:]


def _empty(blob: bytes) -> bytes:
    return b""


def _header_only(blob: bytes) -> bytes:
    return blob[: 8 + header_len(blob)]


@pytest.mark.parametrize("damage", [_truncate, _flip_data, _edit_header, _empty, _header_only])
def test_damaged_current_falls_back_to_previous_with_warning(tmp_path, damage):
    checkpoint.save(tmp_path, *make(2))
    checkpoint.save(tmp_path, *make(3))
    current = tmp_path / checkpoint.CURRENT
    current.write_bytes(damage(current.read_bytes()))
    with pytest.raises(ValueError):
        checkpoint.decode(current.read_bytes())
    with pytest.warns(UserWarning, match="damaged.*previous checkpoint"):
        state, arrays, path = checkpoint.load(tmp_path)
    assert path.name == checkpoint.PREVIOUS and state["engine"]["generation"] == 2
    assert_same(arrays, make(2)[1])


def test_missing_current_uses_previous(tmp_path):
    """A kill between the two renames of ``save`` leaves only the previous checkpoint."""
    checkpoint.save(tmp_path, *make(2))
    checkpoint.save(tmp_path, *make(3))
    (tmp_path / checkpoint.CURRENT).unlink()
    state, _, path = checkpoint.load(tmp_path)
    assert path.name == checkpoint.PREVIOUS and state["engine"]["generation"] == 2


def test_no_intact_checkpoint_raises_naming_both(tmp_path):
    with pytest.raises(EvofoolError, match="no valid checkpoint"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path, *make(2))
    checkpoint.save(tmp_path, *make(3))
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):
        p = tmp_path / name
        p.write_bytes(_flip_data(p.read_bytes()))
    with pytest.raises(EvofoolError) as info:
        checkpoint.load(tmp_path)
    assert checkpoint.CURRENT in str(info.value) and checkpoint.PREVIOUS in str(info.value)
    assert "checksum" in str(info.value)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_decode_never_unpickles(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    evil = pickle.dumps({"state": _Payload(str(marker))})
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "control"))))
    assert (tmp_path / "control").exists()  # the payload works when unpickled

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    for protocol_blob in (evil, pickle.dumps([1, 2, 3], protocol=0)):
        with pytest.raises(ValueError):
            checkpoint.decode(protocol_blob)
    # A well-formed safetensors file in checkpoint format whose state is pickle bytes.
    state = evil.decode("latin-1")
    arrays = {"x": np.zeros(3)}
    blob = st_save(arrays, metadata={"format": checkpoint.FORMAT, "state": state,
                                     "sha256": checkpoint._digest(state, arrays)})
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.decode(blob)
    # Plain safetensors files (e.g. model weights) are not checkpoints.
    with pytest.raises(ValueError, match="not an evofool checkpoint"):
        checkpoint.decode(st_save(arrays))
    # And an intact checkpoint still loads with pickle unavailable.
    checkpoint.save(tmp_path, *make(1))
    assert checkpoint.load(tmp_path)[0]["engine"]["generation"] == 1
    assert not marker.exists()


def test_object_dtype_cannot_be_saved():
    with pytest.raises(Exception):
        checkpoint.encode({}, {"x": np.array([object()], dtype=object)})


def _disk_full_after(fraction: int, at: str):
    """A ``safefs.write_all`` that stores 1/``fraction`` of the data, then (at "write") fails with ENOSPC."""
    real = safefs.write_all

    def write_all(fd, data):
        real(fd, memoryview(data)[: len(data) // fraction])
        if at == "write":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write_all


@pytest.mark.parametrize("at", ["write", "fsync"])
def test_disk_full_keeps_both_checkpoints_and_leaves_no_temp_file(tmp_path, monkeypatch, at):
    checkpoint.save(tmp_path, *make(1))
    checkpoint.save(tmp_path, *make(2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    monkeypatch.setattr(safefs, "write_all", _disk_full_after(3, at))
    if at == "fsync":
        def no_space(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(safefs.os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        checkpoint.save(tmp_path, *make(3))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / checkpoint.CURRENT)  # names the file, not its temp
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .tmp, nothing changed
    assert checkpoint.load(tmp_path)[0]["engine"]["generation"] == 2


# --- a checkpoint is a regular file of bounded size, read and written without following links --
def _two_checkpoints(tmp_path):
    checkpoint.save(tmp_path, *make(1))
    checkpoint.save(tmp_path, *make(2))
    return {p.name: p.read_bytes() for p in tmp_path.iterdir()}


@pytest.mark.parametrize("name", [checkpoint.CURRENT, checkpoint.PREVIOUS])
def test_load_refuses_a_linked_checkpoint(tmp_path, name):
    _two_checkpoints(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.safetensors"
    os.replace(tmp_path / name, outside)
    (tmp_path / name).symlink_to(outside)
    if name == checkpoint.CURRENT:
        with pytest.raises(EvofoolError, match="symbolic link"):
            checkpoint.load(tmp_path)
    else:  # the current one is intact: the previous one is not read at all
        assert checkpoint.load(tmp_path)[0]["engine"]["generation"] == 2


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_load_answers_a_fifo_or_device_at_once(tmp_path, kind):
    current = tmp_path / checkpoint.CURRENT
    if kind == "fifo":
        os.mkfifo(current)
    else:
        current.symlink_to("/dev/zero")
    start = time.monotonic()
    with pytest.raises(EvofoolError, match="named pipe|symbolic link"):
        checkpoint.load(tmp_path)
    assert time.monotonic() - start < 5


def test_load_refuses_a_file_larger_than_any_checkpoint(tmp_path, monkeypatch):
    _two_checkpoints(tmp_path)
    monkeypatch.setattr(safefs, "CHECKPOINT_LIMIT", 1000)
    with pytest.raises(EvofoolError, match="more than the 1,000"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("name", [checkpoint.CURRENT + ".tmp", checkpoint.CURRENT, checkpoint.PREVIOUS])
def test_save_never_writes_through_a_link(tmp_path, name):
    before = _two_checkpoints(tmp_path)
    victim = tmp_path.parent / f"{tmp_path.name}-victim.txt"
    victim.write_text("keep me")
    (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / name).symlink_to(victim)
    with pytest.raises(EvofoolError, match="symbolic link") as info:
        checkpoint.save(tmp_path, *make(3))
    assert str(tmp_path / name) in str(info.value)
    assert victim.read_text() == "keep me"
    assert (tmp_path / name).is_symlink()  # refused, not removed
    for other in set(before) - {name}:
        assert (tmp_path / other).read_bytes() == before[other]


def test_save_removes_a_stale_regular_temp_file(tmp_path):
    """A temp file left by a crash of ours is replaced; nothing of it survives."""
    _two_checkpoints(tmp_path)
    (tmp_path / (checkpoint.CURRENT + ".tmp")).write_bytes(b"half a checkpoint")
    checkpoint.save(tmp_path, *make(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([checkpoint.CURRENT, checkpoint.PREVIOUS])
    assert checkpoint.load(tmp_path)[0]["engine"]["generation"] == 3
