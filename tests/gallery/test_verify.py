"""``verify``: every exported PNG re-scored by the run's model."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image


def test_verify_reports_a_tampered_png(mnist_run, tmp_path, cli_run):
    run = tmp_path / "tampered"
    shutil.copytree(mnist_run, run, ignore=shutil.ignore_patterns("gallery"))
    png = run / "champions" / "0003-3.png"
    with Image.open(png) as im:
        Image.fromarray(255 - np.asarray(im)).save(png)
    proc = cli_run("export", str(run), "--verify")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if line.startswith("mismatch:")]
    assert flagged and all("0003-3" in line for line in flagged), proc.stdout
    assert "verify failed: 2 of 20 images" in proc.stderr  # the native copy and its enlargement
    assert "Traceback" not in proc.stderr
