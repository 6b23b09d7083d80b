"""Helpers for fault tests: the real ``evofool`` CLI in a subprocess, one-line errors, files untouched.

Every fault test asserts the same contract (exit code 2, exactly one ``error: ...`` line on
stderr, no traceback) and that no file that existed before the command changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# Fault tests start many short processes: one thread each keeps two of them from fighting
# over the 2 cores, and a short limit turns a hang (a FIFO read...) into a failure, fast.
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def evofool(*args: str, cwd: Path | None = None, timeout: float = 120,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m evofool ARGS`` in a subprocess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "evofool", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**_ENV, **(env or {})}, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one ``error:`` line on stderr containing every fragment, no traceback.

    Returns:
        The error line.
    """
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every regular file under ``roots`` (symlinks recorded by target, not followed)."""
    digests = {}
    for root in roots:
        root = Path(root)
        paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink():
                digests[str(p)] = "link->" + os.readlink(p)
            elif p.is_file():
                digests[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digests


def assert_unchanged(before: dict[str, str], *roots: Path) -> None:
    """Every file in ``before`` still exists with the same bytes (new files may have appeared)."""
    after = snapshot(*roots)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"changed or removed: {changed}"


def evofool_background(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """``python -m evofool ARGS`` started in the background (text output captured); its ``pid``
    is the evofool process's own."""
    return subprocess.Popen([sys.executable, "-m", "evofool", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_ENV, **(env or {})}, stdin=subprocess.DEVNULL)


# --- the same CLI in process (click's runner) --------------------------------------------------
def invoke(*args):
    """``evofool ARGS`` through click's runner, in this process (arguments made strings)."""
    from click.testing import CliRunner

    from evofool.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *fragments: str) -> str:
    """``assert_one_line_error`` for an ``invoke`` result (click's ``Result``).

    Returns:
        The error line.
    """
    # click keeps stdout and stderr apart (click >= 8.2); a traceback would be in its output.
    proc = subprocess.CompletedProcess([], result.exit_code, stdout=result.output, stderr=result.stderr)
    return assert_one_line_error(proc, *fragments)
