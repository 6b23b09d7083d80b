"""Helpers for the checkpoint / resume tests: real ``python -m evofool`` processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from evofool import checkpoint
from evofool.engine import TIMING_KEYS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LENET = REPO_ROOT / "evofool" / "models" / "weights" / "lenet-mnist.safetensors"


def model_spec(tmp_dir: Path) -> str:
    """The shipped ``lenet-mnist`` if its weights exist, else a seeded random-init LeNet file."""
    if SHIPPED_LENET.is_file():
        return "lenet-mnist"
    import torch

    from evofool.models.lenet import LeNet, save_lenet

    path = tmp_dir / "rand-lenet.safetensors"
    if not path.exists():
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(1234)
            save_lenet(LeNet(), path)
        finally:
            torch.random.set_rng_state(state)
    return f"lenet:{path}"


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("PYTHONWARNINGS", None)
    return e


def cmd(*args) -> list[str]:
    return [sys.executable, "-m", "evofool", *map(str, args)]


def evofool(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python -m evofool ARGS`` to completion (text output captured)."""
    return subprocess.run(cmd(*args), capture_output=True, text=True, env=env(), cwd=REPO_ROOT,
                          timeout=timeout)


def start(*args) -> subprocess.Popen:
    """Starts ``python -m evofool ARGS`` in the background (text output captured)."""
    return subprocess.Popen(cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), cwd=REPO_ROOT)


def run_args(model: str, out: Path, *, encoding: str = "direct", generations: int = 30,
             population: int = 50, seed: int = 7, every: int = 5) -> list:
    return ["run", "--model", model, "--encoding", encoding, "--generations", generations,
            "--population", population, "--seed", seed, "--out", out, "--checkpoint-every", every,
            "--quiet", "--no-gallery"]


def complete_lines(path: Path) -> int:
    """Number of complete (newline-terminated) lines of a file; 0 when it does not exist."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(proc: subprocess.Popen, log: Path, n: int, timeout: float = 240) -> int:
    """Polls ``log`` until it has ``n`` complete lines (fails if the process ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = complete_lines(log)
        if count >= n:
            return count
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {n} log lines:\n{err}")
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"no {n} log lines after {timeout} s")


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir``, relative path -> bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def assert_same_result(a: Path, b: Path, generations: int) -> None:
    """Two run folders hold bit-identical results: every checkpoint array, the engine state,
    the champion PNG bytes, champions.json, summary.json, and the log apart from timing."""
    state_a, arrays_a, path_a = checkpoint.load(a)
    state_b, arrays_b, path_b = checkpoint.load(b)
    assert path_a.name == path_b.name == checkpoint.CURRENT
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        x, y = arrays_a[key], arrays_b[key]
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), f"checkpoint array {key} differs"
    assert state_a["engine"] == state_b["engine"]
    assert state_a["engine"]["generation"] == generations
    assert state_a["config"] == state_b["config"] and state_a["config_hash"] == state_b["config_hash"]

    pngs_a = {p.name: p.read_bytes() for p in sorted((a / "champions").iterdir())}
    pngs_b = {p.name: p.read_bytes() for p in sorted((b / "champions").iterdir())}
    assert pngs_a and sorted(pngs_a) == sorted(pngs_b)
    assert all(name.endswith(".png") for name in pngs_a), sorted(pngs_a)
    for name in pngs_a:
        assert pngs_a[name] == pngs_b[name], f"champion {name} differs"
    assert json.loads((a / "champions.json").read_text()) == json.loads((b / "champions.json").read_text())
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())

    log_a, log_b = read_log(a), read_log(b)
    assert [r["generation"] for r in log_a] == list(range(1, generations + 1))
    assert [r["generation"] for r in log_b] == list(range(1, generations + 1))
    assert without_timing(log_a) == without_timing(log_b)
    assert not list(a.rglob("*.tmp")) and not list(b.rglob("*.tmp"))


def stop_with(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=120)
