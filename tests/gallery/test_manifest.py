"""``manifest.json`` / ``manifest.csv``: a gallery's classes, files and run facts."""

from __future__ import annotations

import csv
import json


def test_manifests_match_the_archive(mnist_run, mnist_gallery):
    gallery, _ = mnist_gallery
    archive = json.loads((mnist_run / "champions.json").read_text())["champions"]
    manifest = json.loads((gallery / "manifest.json").read_text())
    run = manifest["run"]
    assert run["encoding"] == "direct" and run["seed"] == 0 and run["population"] == 100
    assert run["generations_done"] == 15 and run["model"].startswith("lenet")
    assert [e["class"] for e in manifest["classes"]] == list(range(10))
    for entry, champion in zip(manifest["classes"], archive):
        assert entry["confidence"] == champion["confidence"]
        assert entry["generation"] == champion["generation"]
        assert (gallery / entry["image"]).is_file() and (gallery / entry["enlarged"]).is_file()
    with open(gallery / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert {"class", "name", "confidence", "generation", "image", "enlarged", "model", "encoding", "seed",
            "population", "generations_done"} <= set(rows[0])
    assert float(rows[3]["confidence"]) == archive[3]["confidence"]
    assert rows[0]["generations_done"] == "15"


def test_the_columns_follow_the_kind_of_run():
    from evofool.gallery.manifest import csv_fields, fitness_kind_of

    assert csv_fields("log_prob")[:4] == ["class", "name", "confidence", "log_prob"]
    assert csv_fields("score")[:3] == ["class", "name", "activation"] and "confidence" not in csv_fields("score")
    assert fitness_kind_of({"run": {}}) == "log_prob"  # a manifest from before unit runs had their own key
    assert fitness_kind_of({"run": {"fitness_kind": "score"}}) == "score"
