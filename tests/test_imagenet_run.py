"""A 1,000-class ImageNet run end to end on the CPU: 2 CPPN generations, then a gallery export."""

from __future__ import annotations

import json
from pathlib import Path

from run_helpers import require_imagenet_packages, run_then_export


def test_two_generation_imagenet_cppn_run_and_gallery(tmp_path):
    require_imagenet_packages()
    run = tmp_path / "run"
    summary, manifest = run_then_export(run, "--model", "efficientnet-lite0", "--encoding", "cppn",
                                        "--population", "4", "--generations", "2", "--device", "cpu")
    assert summary["generation"] == 2 and summary["evaluations"] == 8 and summary["classes"] == 1000

    champions = json.loads((run / "champions.json").read_text())["champions"]
    filled = {c["class"] for c in champions}
    # Every image scores for every class, so one generation fills all 1,000 cells.
    assert len(filled) == 1000

    gallery = run / "gallery"
    assert {c["class"] for c in manifest["classes"]} == filled
    images = sorted(p.name for p in (gallery / "images").glob("*.png"))
    assert images == sorted(Path(c["image"]).name for c in manifest["classes"])  # one per class, 224 px: no enlargements
    assert len(images) == len(filled)
    assert images[235] == "0235-german-shepherd.png"
    assert all(c["width"] == 224 and c["height"] == 224 for c in manifest["classes"])
    assert (gallery / "index.html").is_file()
