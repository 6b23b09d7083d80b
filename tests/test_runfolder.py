"""``RunFolder``: creation under a lock, the log's scan and repair, champion paths, the pre-flight check."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from evofool import checkpoint, safefs
from evofool.config import RunConfig
from evofool.errors import EvofoolError
from evofool.runfolder import LogDamaged, RunFolder, scan_log

NAMES = [str(i) for i in range(10)]


def records(n: int) -> bytes:
    return b"".join(json.dumps({"generation": g, "max": 0.5}).encode() + b"\n" for g in range(1, n + 1))


def make(path) -> RunFolder:
    return RunFolder.create(path, RunConfig(population=20, generations=6), NAMES)


# --- creation ----------------------------------------------------------------------------------
def test_create_leaves_an_empty_released_lock(tmp_path):
    folder = make(tmp_path / "r")
    assert (folder.path / safefs.LOCK).read_bytes() == b""
    with safefs.lock_folder(folder.path):  # released: another writer may take it
        pass


def test_create_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "r").mkdir()
    with safefs.lock_folder(tmp_path / "r"):
        with pytest.raises(EvofoolError, match=f"is in use by process {os.getpid()}"):
            make(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [safefs.LOCK]


def test_create_ignores_a_lock_file_left_by_a_crash_but_not_a_foreign_one(tmp_path):
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / safefs.LOCK).write_text("12345\n")
    make(tmp_path / "crashed")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / safefs.LOCK).write_text("my own notes")
    with pytest.raises(EvofoolError, match="not empty"):
        make(tmp_path / "mine")
    assert (tmp_path / "mine" / safefs.LOCK).read_text() == "my own notes"


def test_create_through_dot_dot_checks_the_folder_it_lands_in(tmp_path):
    """others/x/.. is others once x is made: refused as not empty, with nothing made there
    (no x/, no .lock: the check used to pass on the text, then mkdir made x)."""
    others = tmp_path / "others"
    others.mkdir()
    (others / "a.txt").write_text("mine")
    with pytest.raises(EvofoolError, match="not empty"):
        make(others / "x" / "..")
    assert sorted(p.name for p in others.iterdir()) == ["a.txt"]
    folder = make(tmp_path / "new" / ".." / "fresh")
    assert os.path.samefile(folder.path, tmp_path / "fresh") and (tmp_path / "fresh" / "config.json").is_file()
    assert not (tmp_path / "new").exists()


def test_keep_lock_holds_it_until_release(tmp_path):
    folder = RunFolder.create(tmp_path / "r", RunConfig(), NAMES, keep_lock=True)
    with pytest.raises(EvofoolError, match="in use"):
        RunFolder.open(tmp_path / "r").acquire()
    folder.release()
    RunFolder.open(tmp_path / "r").acquire()


def test_open_refuses_a_linked_config(tmp_path):
    folder = make(tmp_path / "r")
    os.replace(folder.path / "config.json", tmp_path / "config.json")
    (folder.path / "config.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(EvofoolError, match="symbolic link"):
        RunFolder.open(folder.path)


# --- the log ------------------------------------------------------------------------------------
def test_scan_log_tells_records_from_damaged_and_torn_lines():
    data = records(2) + b"garbage{\n" + b"\n" + b'"just a string"\n' + b'{"generation": 3, "ev'
    scan = scan_log(data)
    assert [r["generation"] for r in scan.records] == [1, 2]
    assert scan.damaged == [3, 5, 6] and scan.damage_at == len(records(2))


@pytest.mark.parametrize("field, value", [
    ("median", "NaN"), ("min", "Infinity"), ("max", "-Infinity"), ("median", '"0.5"'), ("q1", "null"),
    ("n99", "-1"), ("n99", "2.5"), ("evaluations", "true"), ("seconds", "[1]"), ("generation", "-3"),
])
def test_a_record_whose_known_field_holds_the_wrong_kind_is_damaged(field, value):
    """An edited line (NaN, a string, a negative count) is damaged like a torn one, so plots
    and resume never take it; fields the log does not know are free."""
    good = {"generation": 2, "evaluations": 40, "improved": 3, "min": 0.1, "q1": 0.2, "median": 0.3,
            "q3": 0.4, "max": 0.9, "n99": 0, "n9999": 0, "evals_per_s": 900.5, "seconds": 0.02, "note": [None]}
    line = json.dumps(good)
    bad = re.sub(rf'"{field}": [^,]+', f'"{field}": {value}', line, count=1)
    assert bad != line
    scan = scan_log(records(1) + line.encode() + b"\n" + bad.encode() + b"\n")
    assert [r["generation"] for r in scan.records] == [1, 2] and scan.records[1] == good
    assert scan.damaged == [3]


def test_read_log_skips_damaged_lines(tmp_path):
    folder = make(tmp_path / "r")
    folder.log_path.write_bytes(records(2) + b"\x00\x00\n" + records(3)[len(records(2)):])
    assert [r["generation"] for r in folder.read_log()] == [1, 2, 3]


def test_repair_cuts_what_the_checkpoint_does_not_cover_with_a_warning_for_damage(tmp_path):
    folder = make(tmp_path / "r")
    covered = records(4)
    folder.log_path.write_bytes(covered + b"garbage\n" + b'{"generation": 6')
    warning = folder.repair_log(len(covered), 4)
    assert "2 damaged line(s) after the checkpoint's generation 4" in warning
    assert folder.log_path.read_bytes() == covered
    assert folder.repair_log(len(covered), 4) is None  # nothing to cut: nothing said


@pytest.mark.parametrize("damage, where", [
    (lambda b: b.replace(b'"generation": 2', b'"generation"  2'), "line 2"),
    (lambda b: b.replace(b'"generation": 3', b'"generation": 7'), "line 3"),
    (lambda b: b[:20], "shorter"),
])
def test_repair_refuses_damage_inside_what_the_checkpoint_covers(tmp_path, damage, where):
    folder = make(tmp_path / "r")
    covered = records(4)
    folder.log_path.write_bytes(damage(covered) + (b"" if where == "shorter" else records(5)[len(covered):]))
    before = folder.log_path.read_bytes()
    with pytest.raises(LogDamaged, match=where) as info:
        folder.repair_log(len(covered), 4)
    assert 0 <= info.value.at <= len(covered)
    assert folder.log_path.read_bytes() == before  # refused: nothing cut


def test_repair_refuses_a_linked_log(tmp_path):
    folder = make(tmp_path / "r")
    (tmp_path / "notes").write_bytes(records(10))
    folder.log_path.unlink()
    folder.log_path.symlink_to(tmp_path / "notes")
    with pytest.raises(EvofoolError, match="symbolic link"):
        folder.repair_log(len(records(4)), 4)
    assert (tmp_path / "notes").read_bytes() == records(10)


# --- champions --------------------------------------------------------------------------------
def write_champions(folder: RunFolder) -> None:
    images = np.zeros((10, 1, 4, 4), dtype=np.uint8)
    log_probs = np.full(10, -0.5)
    folder.write_champions(images, np.exp(log_probs), log_probs, np.arange(10), NAMES)


def champion_images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)


def test_a_checkpoint_rewrites_only_the_champions_that_changed(tmp_path):
    """Each entry records its PNG's sha256; a champion with the same generation and fitness
    is not written again (the file keeps its inode), a changed one is, also by a later
    process resuming the run (a new RunFolder)."""
    import hashlib

    folder = make(tmp_path / "r")
    images, log_probs, generations = champion_images(0), np.full(10, -0.5), np.arange(10)
    folder.write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
    inodes = {p.name: p.stat().st_ino for p in (folder.path / "champions").iterdir()}
    doc = folder.read_champions()
    for entry in doc["champions"]:
        assert entry["sha256"] == hashlib.sha256((folder.path / entry["file"]).read_bytes()).hexdigest()
    images[3], log_probs[3], generations[3] = champion_images(1)[3], -0.1, 12  # class 3's new champion
    for writer in (folder, RunFolder.open(folder.path)):
        writer.write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
        changed = {p.name for p in (folder.path / "champions").iterdir() if p.stat().st_ino != inodes[p.name]}
        assert changed == ({"0003-3.png"} if writer is folder else set())
        inodes = {p.name: p.stat().st_ino for p in (folder.path / "champions").iterdir()}
    entry = folder.read_champions()["champions"][3]
    assert entry["generation"] == 12
    assert entry["sha256"] == hashlib.sha256((folder.path / entry["file"]).read_bytes()).hexdigest()
    (folder.path / entry["file"]).write_bytes(b"edited")  # a file changed behind the run's back
    RunFolder.open(folder.path).write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
    assert hashlib.sha256((folder.path / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    victim = tmp_path / "victim.txt"  # a link planted over an unchanged champion: refused, not skipped
    victim.write_text("keep")
    (folder.path / entry["file"]).unlink()
    (folder.path / entry["file"]).symlink_to(victim)
    with pytest.raises(EvofoolError, match="symbolic link"):
        folder.write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
    assert victim.read_text() == "keep"


def test_readers_get_the_pngs_champions_json_describes_while_a_run_writes(tmp_path):
    """A run going on writes a champion's new PNG before its next champions.json: a reader
    that meets a PNG newer than its entry reads both again until they agree, or says the run
    kept changing them; with no run going on, a changed PNG is taken as it is (callers decode it)."""
    import subprocess
    import sys
    import threading

    folder = make(tmp_path / "r")
    images, log_probs, generations = champion_images(0), np.full(10, -0.5), np.arange(10)
    folder.write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
    old_doc = folder.read_champions()
    newer = champion_images(1)
    images[2], log_probs[2], generations[2] = newer[2], -0.2, 30
    writer = RunFolder(folder.path)  # the run's next checkpoint, stopped between its PNGs and its json
    writer._on_disk = dict(folder._on_disk)
    real_json = safefs.write_json_atomic
    safefs.write_json_atomic = lambda *a, **k: None
    try:
        writer.write_champions(images, np.exp(log_probs), log_probs, generations, NAMES)
    finally:
        safefs.write_json_atomic = real_json
    assert folder.read_champions() == old_doc  # the PNG is new, champions.json is not yet
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder.path / ".lock").write_text(str(live.pid))  # as a running run holds it
        reader = RunFolder.open(folder.path)
        with pytest.raises(EvofoolError, match="changed each of the 3 times they were read"):
            reader.read_champion_files(attempts=3, pause=0.01)
        finish = threading.Timer(0.3, lambda: writer.write_champions(images, np.exp(log_probs), log_probs,
                                                                     generations, NAMES))
        finish.start()
        doc, files = reader.read_champion_files(attempts=100, pause=0.02)
        finish.join()
    finally:
        live.kill()
        live.wait()
    entry = doc["champions"][2]
    assert entry["generation"] == 30 and files[entry["file"]] == (folder.path / entry["file"]).read_bytes()
    (folder.path / ".lock").write_text(str(live.pid))  # that run has ended
    (folder.path / entry["file"]).write_bytes(b"damaged")
    _, files = RunFolder.open(folder.path).read_champion_files(attempts=2, pause=0.01)
    assert files[entry["file"]] == b"damaged"


@pytest.mark.parametrize("rel", ["../outside.png", "/etc/passwd", "champions/../../outside.png"])
def test_champion_paths_stay_inside_the_folder(tmp_path, rel):
    folder = make(tmp_path / "r")
    write_champions(folder)
    (tmp_path / "outside.png").write_bytes(b"x")
    with pytest.raises(EvofoolError, match="not a path inside|leads out"):
        folder.champion_path(rel)
    assert folder.champion_path("champions/0003-3.png") == folder.path / "champions" / "0003-3.png"


def test_a_linked_champion_is_refused(tmp_path):
    folder = make(tmp_path / "r")
    write_champions(folder)
    png = folder.path / "champions" / "0003-3.png"
    png.unlink()
    png.symlink_to(folder.path / "champions" / "0004-4.png")
    with pytest.raises(EvofoolError, match="symbolic link"):
        folder.champion_path("champions/0003-3.png")


# --- the pre-flight check of resume ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["log.jsonl", "champions.json.tmp", "summary.json", "config.json.tmp",
                                  checkpoint.CURRENT + ".tmp", checkpoint.PREVIOUS, "champions/0009-9.png.tmp",
                                  safefs.LOCK])
def test_check_writable_names_the_first_link(tmp_path, name):
    folder = make(tmp_path / "r")
    write_champions(folder)
    (folder.path / name).unlink(missing_ok=True)
    (folder.path / name).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EvofoolError, match="symbolic link") as info:
        folder.check_writable(NAMES)
    assert str(folder.path / name) in str(info.value)


def test_check_writable_refuses_a_linked_champions_folder(tmp_path):
    folder = make(tmp_path / "r")
    (tmp_path / "elsewhere").mkdir()
    (folder.path / "champions").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(EvofoolError, match="champions is a symbolic link"):
        folder.check_writable(NAMES)


def test_job_summary_skips_a_damaged_log_line_with_a_warning(tmp_path, capsys):
    from evofool.job import Job

    job = Job.start(RunConfig(population=20, generations=3, checkpoint_every=0), tmp_path / "r", progress=False)
    assert job.run() == 0
    capsys.readouterr()
    log = job.folder.log_path
    log.write_bytes(log.read_bytes().replace(b'{"generation": 2', b'{"generation"; 2', 1))
    summary = job.summary()
    assert summary["generation"] == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "line 2" in err[0]
