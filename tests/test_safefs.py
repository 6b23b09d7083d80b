"""``evofool.safefs``: writes never follow a link, reads are bounded regular files, one writer per folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evofool import safefs
from evofool.errors import EvofoolError


@pytest.fixture
def room(tmp_path) -> Path:
    """A folder to write in, beside a file outside it that must never change."""
    (tmp_path / "room").mkdir()
    (tmp_path / "outside.txt").write_text("keep me")
    return tmp_path / "room"


def outside(room: Path) -> Path:
    return room.parent / "outside.txt"


# --- write_bytes_atomic --------------------------------------------------------------------------
def test_write_creates_and_replaces_leaving_no_temp_file(room):
    path = room / "a.json"
    safefs.write_bytes_atomic(path, b"one")
    safefs.write_json_atomic(path, {"x": 1})
    assert path.read_text() == '{\n "x": 1\n}\n'
    assert sorted(p.name for p in room.iterdir()) == ["a.json"]


@pytest.mark.parametrize("linked", ["target", "temp"])
def test_write_refuses_a_linked_target_or_temp_file_and_keeps_the_link(room, linked):
    name = "a.json" if linked == "target" else "a.json.tmp"
    (room / name).symlink_to(outside(room))
    with pytest.raises(EvofoolError, match="symbolic link") as info:
        safefs.write_bytes_atomic(room / "a.json", b"new")
    assert str(room / name) in str(info.value)
    assert outside(room).read_text() == "keep me"
    assert (room / name).is_symlink()  # refused, not removed


def test_write_refuses_a_fifo_target(room):
    os.mkfifo(room / "a.json")
    with pytest.raises(EvofoolError, match="named pipe"):
        safefs.write_bytes_atomic(room / "a.json", b"new")


def test_write_replaces_a_stale_regular_temp_file(room):
    (room / "a.json.tmp").write_text("left by a crash")
    safefs.write_bytes_atomic(room / "a.json", b"new")
    assert (room / "a.json").read_bytes() == b"new" and not (room / "a.json.tmp").exists()


def test_write_over_a_hard_link_leaves_the_other_name_alone(room):
    os.link(outside(room), room / "a.json")
    safefs.write_bytes_atomic(room / "a.json", b"new")
    assert outside(room).read_text() == "keep me" and (room / "a.json").read_bytes() == b"new"


def test_write_refuses_a_linked_folder_below_the_root_but_not_the_root_itself(room, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (room / "champions").symlink_to(elsewhere)
    with pytest.raises(EvofoolError, match="champions is a symbolic link"):
        safefs.write_bytes_atomic(room / "champions" / "x.png", b"png", root=room)
    with pytest.raises(EvofoolError, match="symbolic link"):
        safefs.make_dir(room / "champions", room)
    assert list(elsewhere.iterdir()) == []
    # The root may be a link the user chose (e.g. runs/ on another disk).
    (tmp_path / "via-link").symlink_to(room)
    safefs.write_bytes_atomic(tmp_path / "via-link" / "b.json", b"ok", root=tmp_path / "via-link")
    assert (room / "b.json").read_bytes() == b"ok"


def test_write_keeps_the_previous_version_when_asked(room):
    safefs.write_bytes_atomic(room / "c", b"1", previous="c.prev")
    safefs.write_bytes_atomic(room / "c", b"2", previous="c.prev")
    assert (room / "c").read_bytes() == b"2" and (room / "c.prev").read_bytes() == b"1"


def test_disk_full_leaves_the_target_and_no_temp_file(room, monkeypatch):
    safefs.write_bytes_atomic(room / "a.png", b"old")
    real = safefs.write_all

    def full(fd, data):
        real(fd, memoryview(data)[:1])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safefs, "write_all", full)
    with pytest.raises(OSError) as info:
        safefs.write_bytes_atomic(room / "a.png", b"new png bytes")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(room / "a.png")
    assert sorted(p.name for p in room.iterdir()) == ["a.png"] and (room / "a.png").read_bytes() == b"old"


# --- reading ---------------------------------------------------------------------------------------
def test_read_bounded_reads_a_regular_file(room):
    (room / "a").write_bytes(b"x" * 1000)
    assert safefs.read_bounded(room / "a", 1000) == b"x" * 1000
    with pytest.raises(EvofoolError, match="1,001 bytes, more than the 1,000"):
        (room / "a").write_bytes(b"x" * 1001)
        safefs.read_bounded(room / "a", 1000)
    with pytest.raises(FileNotFoundError):
        safefs.read_bounded(room / "missing", 1000)


@pytest.mark.parametrize("kind, message", [("link", "symbolic link"), ("fifo", "named pipe"),
                                           ("dev-zero", "symbolic link"), ("folder", "a folder")])
def test_read_bounded_refuses_anything_but_a_regular_file_at_once(room, kind, message):
    path = room / "checkpoint.safetensors"
    if kind == "link":
        path.symlink_to(outside(room))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    start = time.monotonic()
    with pytest.raises(EvofoolError, match=message):
        safefs.read_bounded(path, safefs.CHECKPOINT_LIMIT)
    assert time.monotonic() - start < 2


def test_read_bounded_refuses_a_device():
    with pytest.raises(EvofoolError, match="a device"):
        safefs.read_bounded("/dev/zero", 100)


def test_check_regular_and_check_folder(room):
    assert safefs.check_regular(room / "missing") is None
    (room / "f").write_text("x")
    assert safefs.check_regular(room / "f").st_size == 1
    (room / "l").symlink_to(room / "f")
    with pytest.raises(EvofoolError, match="symbolic link"):
        safefs.check_regular(room / "l")
    assert safefs.check_folder(room / "d", room) is False
    (room / "d").mkdir()
    assert safefs.check_folder(room / "d", room) is True
    with pytest.raises(EvofoolError, match="not a folder"):
        safefs.check_folder(room / "f", room)


# --- the log: append and truncate without following links -----------------------------------------
def test_append_and_truncate_never_follow_a_link(room):
    log = room / "log.jsonl"
    with safefs.open_append_nofollow(log) as fh:
        safefs.write_all(fh.fileno(), b"one\n")
    with safefs.open_append_nofollow(log) as fh:
        safefs.write_all(fh.fileno(), b"two\n")
    safefs.truncate_nofollow(log, 4)
    assert log.read_bytes() == b"one\n"
    log.unlink()
    log.symlink_to(outside(room))
    for call in (lambda: safefs.open_append_nofollow(log), lambda: safefs.truncate_nofollow(log, 0)):
        with pytest.raises(EvofoolError, match="symbolic link"):
            call()
    assert outside(room).read_text() == "keep me"


def test_append_to_a_fifo_is_refused_at_once(room):
    os.mkfifo(room / "log.jsonl")
    with pytest.raises(EvofoolError, match="named pipe"):
        safefs.open_append_nofollow(room / "log.jsonl")


# --- deleting and paths read from files -----------------------------------------------------------
def test_remove_file_deletes_regular_files_only(room):
    (room / "f").write_text("x")
    (room / "l").symlink_to(outside(room))
    (room / "d").mkdir()
    assert safefs.remove_file(room / "f") is True and not (room / "f").exists()
    assert safefs.remove_file(room / "l") is False and (room / "l").is_symlink()
    assert safefs.remove_file(room / "d") is False and (room / "d").is_dir()
    assert outside(room).read_text() == "keep me"


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "", "via/x.png"])
def test_inside_rejects_paths_that_leave_the_folder(room, rel):
    (room / "via").symlink_to(room.parent)
    with pytest.raises(EvofoolError):
        safefs.inside(room, rel)


def test_inside_accepts_a_plain_relative_path(room):
    assert safefs.inside(room, "champions/0003-3.png") == room / "champions" / "0003-3.png"


# --- one writer per folder --------------------------------------------------------------------------
def test_a_second_lock_is_refused_with_the_owner_pid_and_release_empties_the_file(room):
    first = safefs.lock_folder(room)
    assert (room / safefs.LOCK).read_text() == f"{os.getpid()}\n"
    with pytest.raises(EvofoolError, match=f"run folder {room} is in use by process {os.getpid()}"):
        safefs.lock_folder(room)
    first.release()
    assert (room / safefs.LOCK).read_bytes() == b""
    with safefs.lock_folder(room):
        pass


def test_the_lock_of_a_killed_process_is_released_by_the_kernel(room):
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            f"from evofool import safefs; lock = safefs.lock_folder({str(room)!r}); print('locked', flush=True); "
            f"time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(EvofoolError, match=f"in use by process {proc.pid}"):
            safefs.lock_folder(room)
    finally:
        proc.kill()
        proc.wait()
    with safefs.lock_folder(room):  # a SIGKILL leaves its pid in the file, but no lock
        pass


@pytest.mark.parametrize("name", [safefs.LOCK, "log.jsonl"])
def test_a_hard_linked_lock_or_log_is_refused_and_the_other_name_keeps_its_bytes(room, name):
    """O_NOFOLLOW stops symbolic links only: a second name of the file (a planted hard link,
    or a folder copied with cp -al) would be truncated by the lock or appended to by the log."""
    os.link(outside(room), room / name)
    calls = {safefs.LOCK: lambda: safefs.lock_folder(room),
             "log.jsonl": lambda: safefs.open_append_nofollow(room / name)}
    for call in (calls[name], lambda: safefs.truncate_nofollow(room / name, 0)):
        with pytest.raises(EvofoolError, match="has 2 hard links"):
            call()
    assert outside(room).read_text() == "keep me"


def test_a_linked_lock_file_is_refused(room):
    (room / safefs.LOCK).symlink_to(outside(room))
    with pytest.raises(EvofoolError, match="symbolic link"):
        safefs.lock_folder(room)
    assert outside(room).read_text() == "keep me"
