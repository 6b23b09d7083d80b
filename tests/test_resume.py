"""Long jobs end to end: clean interruption, exact resume, damaged checkpoints, SIGKILL, disk full.

Every run here is a real ``python -m evofool`` process writing a real run folder
(except the disk-full case, which patches the file write in-process). "Identical"
means bit-for-bit: every checkpoint array, the champion PNG bytes, champions.json,
summary.json, and the log apart from ``evofool.engine.TIMING_KEYS``.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evofool import checkpoint
from resume_helpers import (SHIPPED_LENET, assert_same_result, complete_lines, evofool, model_spec, read_log, run_args,
                            snapshot, start, wait_for_lines)

GENERATIONS = 30


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> str:
    return model_spec(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def straight(tmp_path_factory, model):
    """``straight(encoding, generations)``: the folder of an uninterrupted run (made once)."""
    cache: dict[tuple, Path] = {}

    def get(encoding: str = "direct", generations: int = GENERATIONS) -> Path:
        key = (encoding, generations)
        if key not in cache:
            out = tmp_path_factory.mktemp("straight") / f"{encoding}-{generations}"
            proc = evofool(*run_args(model, out, encoding=encoding, generations=generations))
            assert proc.returncode == 0, proc.stderr
            cache[key] = out
        return cache[key]

    return get


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    """stderr is one ``error:`` line (after ``evofool run``'s ``run folder:`` line, if any)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("run folder: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- damaging checkpoint files ------------------------------------------------------------------
def header_len(blob: bytes) -> int:
    return struct.unpack("<Q", blob[:8])[0]


def truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def flip_tensor_bytes(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    start = 8 + header_len(blob)
    assert len(blob) - start > 1000
    for i in range(start + 300, start + 310):  # inside the tensor data, header untouched
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def edit_header_number(path: Path) -> None:
    """Changes one digit of ``evaluations`` in the JSON state, keeping the file's length."""
    blob = bytearray(path.read_bytes())
    n = header_len(blob)
    header = blob[8:8 + n].decode()
    m = re.search(r'evaluations\\": (\d)', header)
    assert m, header[:400]
    digit = m.group(1)
    header = header[:m.start(1)] + str((int(digit) + 1) % 10) + header[m.end(1):]
    edited = header.encode()
    assert len(edited) == n
    json.loads(edited)  # still a valid header: only the checksum can tell
    blob[8:8 + n] = edited
    before = path.stat().st_size
    path.write_bytes(bytes(blob))
    assert path.stat().st_size == before


DAMAGE = {"truncated": truncate, "corrupted": flip_tensor_bytes, "edited": edit_header_number}


# --- 1. clean interruption by SIGINT / SIGTERM, then exact resume --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["direct", "cppn"])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_resumes_to_the_straight_result(tmp_path, model, straight, encoding, sig, code):
    reference = straight(encoding)
    out = tmp_path / "my run"  # a space: the printed resume command must still work when pasted
    proc = start(*run_args(model, out, encoding=encoding))
    wait_for_lines(proc, out / "log.jsonl", 10)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "error:" not in stderr, stderr

    m = re.search(r"^interrupted at generation (\d+); checkpoint saved\. Resume with: (.+)$", stderr, re.M)
    assert m, stderr
    stopped = int(m.group(1))
    assert 10 <= stopped < GENERATIONS, f"interrupt landed at generation {stopped}"
    printed = shlex.split(m.group(2))
    assert printed == ["evofool", "resume", str(out)]
    # The generation in progress was finished and checkpointed; the log matches it exactly.
    state, _, path = checkpoint.load(out)
    assert path.name == checkpoint.CURRENT and state["engine"]["generation"] == stopped
    assert state["log_bytes"] == (out / "log.jsonl").stat().st_size
    assert [r["generation"] for r in read_log(out)] == list(range(1, stopped + 1))
    assert json.loads((out / "summary.json").read_text())["generation"] == stopped

    resumed = evofool(*printed[1:])  # exactly the command the message tells the user to run
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(reference, out, GENERATIONS)


# --- 2. SIGKILL at random moments ------------------------------------------------------------------
def _stat_key(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_at_most_one_interval(tmp_path, model):
    """12 SIGKILLs (seeded random delays; some aimed at the checkpoint write itself) with a
    checkpoint every generation; after each, the newest checkpoint is intact and at most one
    generation behind the log; resuming to the end gives the straight run's result."""
    t0 = time.monotonic()
    rng = random.Random(1905)
    settings = dict(generations=40, population=20, every=1)
    reference = tmp_path / "straight"
    ref_proc = start(*run_args(model, reference, **settings))  # runs beside the loop
    out = tmp_path / "killed"
    current, tmp = out / checkpoint.CURRENT, out / (checkpoint.CURRENT + ".tmp")
    last_generation, kills, mid_write, trace = 0, 0, 0, []
    for attempt in range(16):
        if kills >= 10:
            break
        mode = rng.choice(["during-write", "random", "random", "random", "early"])
        argv = ["resume", out, "--quiet", "--no-gallery"] if (out / "config.json").exists() \
            else run_args(model, out, **settings)
        before = _stat_key(current)
        launched = time.monotonic()
        proc = start(*argv)
        if mode == "early":  # anywhere from interpreter start-up to the first generations
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            # Wait for a sign of work (a new checkpoint), then kill after a random delay or
            # as soon as a checkpoint temp file exists (i.e. inside checkpoint.save).
            while _stat_key(current) == before and proc.poll() is None and time.monotonic() - launched < 120:
                time.sleep(0.001)
            if mode == "random":
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                deadline = time.monotonic() + 5
                while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
                    pass
        if proc.poll() is not None:  # finished before the kill: it must have succeeded
            _, err = proc.communicate()
            assert proc.returncode == 0, err
        else:
            proc.kill()
            _, err = proc.communicate(timeout=60)
            kills += 1
        assert "error:" not in err and "Traceback" not in err, err
        if mode != "early" and (tmp.exists() or (out / "config.json").exists() and not current.exists()):
            mid_write += 1  # killed between opening the temp file and renaming it over the current one
        if not (out / "config.json").exists():
            continue  # killed before the run folder existed: `evofool run` starts again
        log_lines = complete_lines(out / "log.jsonl")
        if not current.exists() and not (out / checkpoint.PREVIOUS).exists():
            # Killed between creating the folder and the generation-0 checkpoint.
            assert log_lines == 0
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state, _, _ = checkpoint.load(out)  # an intact checkpoint, never a damaged one
        assert not caught, [str(w.message) for w in caught]
        generation = state["engine"]["generation"]
        assert generation >= last_generation, "a checkpoint went backwards"
        assert generation >= log_lines - 1, f"lost more than one interval: log {log_lines}, checkpoint {generation}"
        assert state["log_bytes"] <= (out / "log.jsonl").stat().st_size
        last_generation = generation
        trace.append(f"{mode}: log {log_lines} ckpt {generation} after {time.monotonic() - launched:.1f} s")

    print("\n".join(trace))
    assert kills >= 10, f"only {kills} kills landed"
    final = evofool("resume", out, "--quiet", "--no-gallery")
    assert final.returncode == 0, final.stderr
    _, err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, err
    assert_same_result(reference, out, 40)
    print(f"{kills} kills, {mid_write} inside a checkpoint write, {time.monotonic() - t0:.1f} s")


# --- 3. damaged checkpoints ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_falls_back_to_previous_with_warning(tmp_path, straight, damage):
    reference = straight("direct")
    out = copy_run(reference, tmp_path / "run")
    previous = (out / checkpoint.PREVIOUS).read_bytes()
    prev_state, _ = checkpoint.decode(previous)
    DAMAGE[damage](out / checkpoint.CURRENT)
    with pytest.raises(ValueError):
        checkpoint.decode((out / checkpoint.CURRENT).read_bytes())

    proc = evofool("resume", out, "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "damaged" in warning[0] and "previous checkpoint" in warning[0], proc.stderr
    assert str(out / checkpoint.CURRENT) in warning[0]
    # It re-ran from the previous checkpoint (generation 25) to 30: same result as never damaged.
    assert prev_state["engine"]["generation"] == GENERATIONS - 5
    assert_same_result(reference, out, GENERATIONS)
    # The damaged file was replaced, not rotated over the only intact previous checkpoint.
    assert (out / checkpoint.PREVIOUS).read_bytes() == previous


@pytest.mark.slow
@pytest.mark.parametrize("current_damage, previous_damage", [
    ("truncated", "corrupted"), ("edited", "truncated"), ("corrupted", "missing")])
def test_no_intact_checkpoint_is_a_one_line_error_and_changes_nothing(tmp_path, straight, current_damage,
                                                                     previous_damage):
    out = copy_run(straight("direct"), tmp_path / "run")
    DAMAGE[current_damage](out / checkpoint.CURRENT)
    if previous_damage == "missing":
        (out / checkpoint.PREVIOUS).unlink()
    else:
        DAMAGE[previous_damage](out / checkpoint.PREVIOUS)
    before = snapshot(out)
    for args in (["resume", out], ["resume", out, "--generations", "40"], ["run", "--resume", out]):
        proc = evofool(*args)
        assert proc.returncode == 2, proc.stderr
        assert_one_line_error(proc.stderr, "no valid checkpoint", str(out))
        assert snapshot(out) == before  # checkpoints, log, config: byte for byte


# --- 4. loading never unpickles ----------------------------------------------------------------------
class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"engine": _Payload(str(marker))}, protocol=4)


def _safetensors_with_pickle_metadata(marker: Path) -> bytes:
    """A well-formed safetensors file in checkpoint format whose state is pickle bytes (checksum valid)."""
    import numpy as np
    from safetensors.numpy import save as st_save

    state = _evil_pickle(marker).decode("latin-1")
    arrays = {"archive.log_probs": np.zeros(10)}
    meta = {"format": checkpoint.FORMAT, "state": state, "sha256": checkpoint._digest(state, arrays),
            "pickle": state}
    return st_save(arrays, metadata=meta)


def test_payload_is_live(tmp_path):
    """The payload used below really runs when unpickled (so the next test can fail)."""
    control = tmp_path / "control-marker"
    pickle.loads(_evil_pickle(control))
    assert control.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pickle-file", "pickle-file-both", "pickle-in-metadata"])
def test_resume_never_unpickles(tmp_path, straight, kind):
    out = copy_run(straight("direct"), tmp_path / "run")
    marker = tmp_path / "PWNED"
    if kind == "pickle-in-metadata":
        evil = _safetensors_with_pickle_metadata(marker)
    else:
        evil = _evil_pickle(marker)
    (out / checkpoint.CURRENT).write_bytes(evil)
    if kind == "pickle-file":
        (out / checkpoint.PREVIOUS).unlink()
    else:
        (out / checkpoint.PREVIOUS).write_bytes(evil)
    before = snapshot(out)
    proc = evofool("resume", out, "--quiet", "--no-gallery")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, "no valid checkpoint")
    assert not marker.exists()
    assert snapshot(out) == before


# --- 5. resume with another config; extending a finished run -------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("options, keys", [
    (["--population", "99"], ["population"]),
    (["--seed", "5"], ["seed"]),
    (["--seed", "5", "--population", "99", "--generations", "40"], ["population", "seed"]),
    (["--encoding", "cppn"], ["encoding"]),
    (["--param", "eta=20"], ["encoding_params"]),
])
def test_resume_refuses_a_config_that_changes_the_run(tmp_path, straight, options, keys):
    out = copy_run(straight("direct"), tmp_path / "run")
    before = snapshot(out)
    proc = evofool("run", "--resume", out, *options, "--quiet", "--no-gallery")
    assert proc.returncode == 2, proc.stderr
    line = assert_one_line_error(proc.stderr, "cannot resume", *keys)
    assert "generations" not in line.replace(str(out), "")  # an allowed key is not named
    assert snapshot(out) == before


@pytest.mark.parametrize("names", [["0"], [str(9 - k) for k in range(10)]])
def test_resume_refuses_class_names_that_are_not_the_models(tmp_path, straight, names):
    """An edited config.json (or a model changed under the run) whose class names are not the
    model's: one line, nothing written (it used to go on and leave champions that export refused)."""
    out = copy_run(straight("direct"), tmp_path / "run")
    doc = json.loads((out / "config.json").read_text())
    doc["class_names"] = names
    (out / "config.json").write_text(json.dumps(doc))
    before = snapshot(out)
    proc = evofool("resume", out, "--generations", str(GENERATIONS + 5), "--quiet", "--no-gallery")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, "class names", "edited or the model changed")
    assert snapshot(out) == before


def test_resume_refuses_a_model_whose_weights_changed(tmp_path):
    """A weights file retrained (or swapped) under the run's model spec, same class names:
    the champions hold the old weights' confidences, so the resume is refused in one line and
    nothing is written; with the run's weights back, it resumes. A run folder from before
    runs recorded the fingerprint still resumes."""
    from evofool.models.lenet import LeNet, load_lenet, save_lenet, sidecar_path

    weights = tmp_path / "model.safetensors"
    torch_module, meta = load_lenet(SHIPPED_LENET) if SHIPPED_LENET.is_file() else (LeNet(), {})
    save_lenet(torch_module, weights, meta)
    out = tmp_path / "run"
    proc = evofool(*run_args(f"lenet:{weights}", out, generations=10))
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads((out / "config.json").read_text())["model_fingerprint"]
    original = weights.read_bytes()
    other = LeNet()  # fresh random weights under the same file name and sidecar
    save_lenet(other, weights, json.loads(sidecar_path(weights).read_text()))
    before = snapshot(out)
    proc = evofool("resume", out, "--generations", "15", "--quiet", "--no-gallery")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, "other weights", recorded, "start a new run")
    assert snapshot(out) == before
    weights.write_bytes(original)
    proc = evofool("resume", out, "--generations", "15", "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr
    assert [r["generation"] for r in read_log(out)] == list(range(1, 16))
    # Recorded before runs recorded it: no fingerprint, no check (the swapped weights resume).
    doc = json.loads((out / "config.json").read_text())
    del doc["model_fingerprint"]
    (out / "config.json").write_text(json.dumps(doc))
    save_lenet(other, weights, json.loads(sidecar_path(weights).read_text()))
    proc = evofool("resume", out, "--generations", "17", "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_resume_with_more_generations_extends_a_finished_run(tmp_path, straight):
    out = copy_run(straight("direct"), tmp_path / "run")
    proc = evofool("resume", out, "--generations", "40", "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr
    assert [r["generation"] for r in read_log(out)] == list(range(1, 41))
    assert json.loads((out / "config.json").read_text())["config"]["generations"] == 40
    # 30 + 10 resumed generations are exactly a straight 40-generation run.
    assert_same_result(straight("direct", 40), out, 40)
    # A plain resume of the finished run adds nothing.
    again = evofool("resume", out, "--quiet", "--no-gallery")
    assert again.returncode == 0, again.stderr
    assert [r["generation"] for r in read_log(out)] == list(range(1, 41))
    assert_same_result(straight("direct", 40), out, 40)


def resume_a_folder_recorded_without(tmp_path, model, encoding: str, legacy: dict) -> dict:
    """A run with the ``legacy`` values of parameters whose default changed, its folder then
    written as evofool wrote it before they existed (no such keys), resumes to the same
    result as the run never interrupted, under the hash it had. Returns its config.json."""
    def args(out, generations):
        flags = [flag for key, value in legacy.items() for flag in ("--param", f"{key}={value}")]
        return [*run_args(model, out, encoding=encoding, generations=generations, population=20, every=2), *flags]

    straight, old = tmp_path / "straight", tmp_path / "old"
    assert evofool(*args(straight, 6)).returncode == 0
    assert evofool(*args(old, 3)).returncode == 0
    doc = json.loads((old / "config.json").read_text())
    for key in legacy:  # as evofool wrote it before the new default
        del doc["config"]["encoding_params"][key]
    (old / "config.json").write_text(json.dumps(doc))
    proc = evofool("resume", old, "--generations", "6", "--quiet", "--no-gallery")
    assert proc.returncode == 0, proc.stderr
    assert_same_result(straight, old, 6)
    assert json.loads((old / "config.json").read_text())["config_hash"] == doc["config_hash"]
    return doc


def test_a_cppn_run_recorded_before_float32_rendering_resumes_in_float64(tmp_path, model):
    """CPPN runs render in float32 since that became the default; a run folder written before
    (no render_dtype in its encoding_params) rendered in float64 and must resume as it ran,
    under its own hash. A new run records float32 explicitly."""
    doc = resume_a_folder_recorded_without(tmp_path, model, "cppn", {"render_dtype": "float64"})

    new = tmp_path / "new"
    assert evofool(*run_args(model, new, encoding="cppn", generations=1, population=20)).returncode == 0
    recorded = json.loads((new / "config.json").read_text())
    assert recorded["config"]["encoding_params"] == {"render_dtype": "float32", "refine_links": "output"}
    assert recorded["encoding_resolved"]["render_dtype"] == "float32"
    assert recorded["config_hash"] != doc["config_hash"]
    # Given again on resume, the same flags are the same run; another dtype is another run.
    again = evofool("run", "--resume", new, "--param", "render_dtype=float64", "--generations", "2", "--quiet")
    assert again.returncode == 2 and "encoding_params" in again.stderr


def test_a_direct_run_recorded_before_the_pattern_mutations_resumes_with_the_papers(tmp_path, model):
    """The direct encoding mutates by whole-image patterns from flat colours since that became
    its default; a folder written before (no mutation or init in its encoding_params) mutated by
    polynomial steps from noise and must resume so, under its own hash."""
    doc = resume_a_folder_recorded_without(tmp_path, model, "direct", {"mutation": "polynomial", "init": "noise"})

    new = tmp_path / "new"
    assert evofool(*run_args(model, new, encoding="direct", generations=1, population=20)).returncode == 0
    recorded = json.loads((new / "config.json").read_text())
    assert recorded["config"]["encoding_params"] == {"mutation": "patterns", "init": "flat"}
    assert recorded["config_hash"] != doc["config_hash"]
    # the first generation's images, one flat colour each (from noise: ~256 grey levels each)
    images = [np.asarray(Image.open(p)) for p in sorted((new / "champions").glob("*.png"))]
    assert len(images) == 10 and all(len(np.unique(im)) == 1 for im in images)


# --- 6. `evofool run --out` on a folder holding a run --------------------------------------------------
@pytest.mark.slow
def test_run_into_a_folder_holding_a_run_refuses_and_names_resume(tmp_path, model, straight):
    out = copy_run(straight("direct"), tmp_path / "run")
    before = snapshot(out)
    for seed in (7, 8):  # the same run again, and another one
        proc = evofool(*run_args(model, out, seed=seed))
        assert proc.returncode == 2, proc.stderr
        assert_one_line_error(proc.stderr, "evofool resume", str(out))
        assert snapshot(out) == before


# --- 7. disk full while writing a checkpoint, champions, summary or log (in-process CLI) ----------
def _kind_of(fd: int) -> str | None:
    """Which run-folder file a descriptor writes (Linux: /proc/self/fd names it)."""
    name = os.readlink(f"/proc/self/fd/{fd}")
    if name.endswith(checkpoint.CURRENT + ".tmp"):
        return "checkpoint"
    if name.endswith(".png.tmp") and f"{os.sep}champions{os.sep}" in name:
        return "champions"
    if name.endswith("summary.json.tmp"):
        return "summary"
    if name.endswith("log.jsonl"):
        return "log"
    return None


# what fails -> (when: kind written and how many checkpoint/log writes came before, generation that
# fails, generation of the last intact checkpoint, what the error line names)
FULL_DISK = {
    # generations 0, 5, 10 are checkpointed; the 4th checkpoint (generation 15) hits the full disk
    "checkpoint": (lambda kind, n: kind == "checkpoint" and n["checkpoint"] == 4, 15, 10, "the checkpoint"),
    # the first champion PNG of the save at generation 15, before its checkpoint
    "champions": (lambda kind, n: kind == "champions" and n["checkpoint"] == 3, 15, 10, "the champions"),
    # summary.json is written after the checkpoint of generation 15: that checkpoint is intact
    "summary": (lambda kind, n: kind == "summary" and n["checkpoint"] == 4, 15, 15, "summary.json"),
    # the record of generation 13, half of it written (a torn line the resume cuts)
    "log": (lambda kind, n: kind == "log" and n["log"] == 13, 13, 10, "log.jsonl"),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", sorted(FULL_DISK))
def test_disk_full_keeps_the_last_checkpoint_and_reports_one_line(tmp_path, model, straight, monkeypatch, what):
    from evofool import safefs
    from evofool.cli import cli

    fails, failing, intact, named = FULL_DISK[what]
    reference = straight("direct")
    out = tmp_path / "run"
    seen: dict[str, bytes] = {}
    counts = {"checkpoint": 0, "champions": 0, "summary": 0, "log": 0}
    real_write_all = safefs.write_all

    def write_all(fd, data):
        kind = _kind_of(fd)
        if kind is not None:
            counts[kind] += 1
            if fails(kind, counts) and not seen:
                seen.update({n: (out / n).read_bytes() for n in (checkpoint.CURRENT, checkpoint.PREVIOUS)})
                real_write_all(fd, memoryview(data)[: len(data) // 2])  # half of it fits, then ENOSPC
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)

    monkeypatch.setattr(safefs, "write_all", write_all)
    result = CliRunner().invoke(cli, [str(a) for a in run_args(model, out)])
    monkeypatch.undo()
    assert result.exit_code == 2, (result.output, result.exception)
    line = assert_one_line_error(result.stderr, "No space left on device", named, f"generation {failing}",
                                 f"the last checkpoint (generation {intact}) is intact", "evofool resume")
    assert str(out) in line
    assert seen, "the full disk was never hit"
    for name, data in seen.items():
        if what != "summary":  # (after a summary failure the new checkpoint is in place)
            assert (out / name).read_bytes() == data, f"{name} changed"
    assert not list(out.rglob("*.tmp"))
    state, _, path = checkpoint.load(out)
    assert path.name == checkpoint.CURRENT and state["engine"]["generation"] == intact

    # Space is back: resuming finishes the run exactly as if nothing had happened.
    result = CliRunner().invoke(cli, ["resume", str(out), "--quiet", "--no-gallery"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert_same_result(reference, out, GENERATIONS)
