"""Run folders are closed rooms: the real ``evofool`` CLI against planted links, FIFOs, devices,
a second writer, foreign and forged gallery folders, damaged logs and impossible options.

Every refusal is exit code 2, one ``error:`` line, no traceback, and no file that existed
before (inside the run folder or outside it) changed: see ``fault_helpers``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from evofool import checkpoint
from fault_helpers import assert_one_line_error, assert_unchanged, evofool, evofool_background, snapshot
from resume_helpers import assert_same_result, read_log

GENERATIONS = 6
RUN = ["--population", "20", "--seed", "1", "--checkpoint-every", "3", "--quiet", "--no-gallery"]
QUIET = ["--quiet", "--no-gallery"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished 6-generation run (checkpoints at 3 and 6), made once; tests work on copies."""
    out = tmp_path_factory.mktemp("base") / "run"
    proc = evofool("run", "--generations", GENERATIONS, "--out", out, *RUN)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def run(base, tmp_path) -> Path:
    """A copy of the base run, beside ``notes`` (a user file outside it)."""
    (tmp_path / "notes").write_text("".join(f"{i}\n" for i in range(3000)))
    return Path(shutil.copytree(base, tmp_path / "run", symlinks=True))


def refused(proc, before: dict, *roots: Path, fragments=()) -> str:
    line = assert_one_line_error(proc, *fragments)
    assert_unchanged(before, *roots)
    return line


# --- 1. writes never go through a link ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["log.jsonl", "checkpoint.safetensors.tmp", "champions.json.tmp",
                                  "champions/0003-3.png.tmp", "summary.json", "config.json.tmp", ".lock"])
def test_a_linked_file_is_refused_before_any_work(run, tmp_path, name):
    notes = tmp_path / "notes"
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(notes)
    before = snapshot(run, notes)
    proc = evofool("resume", run, "--generations", GENERATIONS + 2, *QUIET)
    refused(proc, before, run, notes, fragments=(str(run / name), "symbolic link"))


def test_a_linked_champions_folder_is_refused(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "champions", elsewhere)
    (run / "champions").symlink_to(elsewhere)
    before = snapshot(run, elsewhere)
    proc = evofool("resume", run, "--generations", GENERATIONS + 2, *QUIET)
    refused(proc, before, run, elsewhere, fragments=(str(run / "champions"), "symbolic link"))


def test_a_linked_gallery_folder_is_refused_by_export(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "index.html").write_text("mine")
    (run / "gallery").symlink_to(elsewhere)
    before = snapshot(run, elsewhere)
    refused(evofool("export", run), before, run, elsewhere, fragments=(str(run / "gallery"), "symbolic link"))


# --- 2. one writer per run folder -------------------------------------------------------------------------
def test_a_second_writer_is_refused_while_readers_keep_working(run, tmp_path):
    first = evofool_background("resume", run, "--generations", 100_000, *QUIET)
    try:
        deadline = time.monotonic() + 120
        while (run / ".lock").read_text().strip() != str(first.pid):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        outside = snapshot(tmp_path / "notes")
        for args in (["resume", run, *QUIET], ["run", "--resume", run, *QUIET]):
            proc = evofool(*args)
            assert_one_line_error(proc, f"run folder {run} is in use by process {first.pid}")
        assert_unchanged(outside, tmp_path / "notes")
        # Readers take no lock: export works while the run goes on (into its own folder).
        exported = evofool("export", run, "--out", tmp_path / "gallery")
        assert exported.returncode == 0, exported.stderr
        assert first.poll() is None, "the first resume ended before the checks"
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    state, _, _ = checkpoint.load(run)
    done = state["engine"]["generation"]
    assert done > GENERATIONS
    assert [r["generation"] for r in read_log(run)] == list(range(1, done + 1))  # one each, in order
    assert (run / ".lock").read_bytes() == b""


# --- 3. export writes only into a new, empty or its own gallery folder ---------------------------------------
def test_export_into_a_foreign_folder_is_refused_and_force_deletes_nothing(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    (mine / "progress.png").write_text("my plot")
    (mine / "notes.txt").write_text("my notes")
    before = snapshot(run, mine)
    refused(evofool("export", run, "--out", mine), before, run, mine, fragments=(str(mine), "--force"))

    forced = evofool("export", run, "--out", mine, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (mine / "notes.txt").read_text() == "my notes"  # not one of the gallery's names: untouched
    assert_unchanged(snapshot(run), run)


def test_a_manifest_of_another_run_does_not_make_a_folder_ours(run, base, tmp_path):
    gallery = tmp_path / "g"
    assert evofool("export", base, "--out", gallery).returncode == 0  # the base run's gallery, not this copy's
    (gallery / "notes.txt").write_text("mine")
    before = snapshot(run, gallery)
    refused(evofool("export", run, "--out", gallery), before, run, gallery, fragments=("not a gallery of",))


def test_a_forged_manifest_deletes_nothing_the_export_did_not_write(run, tmp_path):
    assert evofool("export", run).returncode == 0
    gallery = run / "gallery"
    (gallery / "notes.txt").write_text("mine")
    (gallery / "images" / "mine.png").write_text("mine")
    manifest = json.loads((gallery / "manifest.json").read_text())
    forged = ["../../notes", "../config.json", str(tmp_path / "notes"), "notes.txt", "images/mine.png",
              "images/../../champions.json", "gallery/../../notes"]
    for entry, rel in zip(manifest["classes"], forged):
        entry["image"] = rel
    manifest["plots"] = forged + [5, None]
    manifest["contact_sheets"] = [{"file": rel} for rel in forged] + ["x"]
    (gallery / "manifest.json").write_text(json.dumps(manifest))
    kept = snapshot(tmp_path / "notes", gallery / "notes.txt", gallery / "images" / "mine.png",
                    *[p for p in run.iterdir() if p.name != "gallery"])

    proc = evofool("export", run, "--classes", "9")
    assert proc.returncode == 0, proc.stderr
    assert_unchanged(kept, tmp_path / "notes", run)


# --- 4. reads are bounded regular files, answered at once ----------------------------------------------------
@pytest.mark.parametrize("name, command", [(checkpoint.CURRENT, "resume"), ("log.jsonl", "resume"),
                                           ("champions.json", "export"), ("config.json", "export")])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_is_answered_within_seconds(run, name, command, kind):
    (run / name).unlink()
    if kind == "fifo":
        os.mkfifo(run / name)
    else:
        (run / name).symlink_to("/dev/zero")
    before = snapshot(run)
    start = time.monotonic()
    proc = evofool(command, run, *(QUIET if command == "resume" else []), timeout=10)
    assert time.monotonic() - start < 10
    refused(proc, before, run, fragments=(str(run / name),))


# --- 6. a damaged log -------------------------------------------------------------------------------------------
def test_damage_after_the_checkpoint_is_cut_and_the_result_is_bit_identical(run, base):
    # As if killed after generation 6 was logged but before its checkpoint: the newest checkpoint
    # is generation 3's; line 5 got garbled and a torn line follows.
    os.replace(run / checkpoint.PREVIOUS, run / checkpoint.CURRENT)
    lines = (run / "log.jsonl").read_bytes().split(b"\n")
    lines[4] = b"\x00garbage{" + lines[4][9:]
    (run / "log.jsonl").write_bytes(b"\n".join(lines) + b'{"generation": 7, "evalu')
    proc = evofool("resume", run, *QUIET)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("resuming at")]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "damaged" in warnings[0], proc.stderr
    assert_same_result(base, run, GENERATIONS)


@pytest.mark.parametrize("line, way_out", [(2, "no checkpoint predates the damage"),
                                           (5, f"{checkpoint.PREVIOUS} (generation 3) predates the damage")])
def test_damage_inside_what_the_checkpoint_covers_is_refused_with_the_way_out(run, line, way_out):
    lines = (run / "log.jsonl").read_bytes().split(b"\n")
    lines[line - 1] = b"#" + lines[line - 1][1:]
    (run / "log.jsonl").write_bytes(b"\n".join(lines))
    before = snapshot(run)
    refused(evofool("resume", run, *QUIET), before, run,
            fragments=(f"log.jsonl is damaged at line {line}", way_out))


def test_export_skips_a_damaged_log_line_with_one_warning(run, tmp_path):
    lines = (run / "log.jsonl").read_bytes().split(b"\n")
    lines[2] = b"not json"
    (run / "log.jsonl").write_bytes(b"\n".join(lines))
    proc = evofool("export", run, "--out", tmp_path / "g")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning:") and "line 3" in err[0], proc.stderr
    assert (tmp_path / "g" / "progress.png").is_file()


# --- options that cannot work ----------------------------------------------------------------------------------
def test_resume_with_fewer_generations_than_done_is_refused(run):
    before = snapshot(run)
    refused(evofool("resume", run, "--generations", 4, *QUIET), before, run,
            fragments=("--generations 4", f"{GENERATIONS} generations are done", f"pass {GENERATIONS} or more"))


@pytest.mark.parametrize("scale", ["100000", "147"])
def test_export_with_a_huge_scale_is_refused(run, tmp_path, scale):
    before = snapshot(run)
    refused(evofool("export", run, "--out", tmp_path / "g", "--scale", scale), before, run,
            fragments=(f"--scale {scale}", "use --scale 146 or less"))
    assert not (tmp_path / "g").exists()
