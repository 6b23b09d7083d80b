"""Galleries of activation-maximisation runs (``unit:`` specs): activations shown as activations."""

from __future__ import annotations

import csv
import json
import re

import pytest

from evofool.gallery import export_gallery, verify


@pytest.fixture(scope="module")
def unit_gallery(unit_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("unit-gallery") / "gallery"
    return out, export_gallery(unit_run, out)


def test_the_manifest_holds_activations(unit_run, unit_gallery):
    out, _ = unit_gallery
    manifest = json.loads((out / "manifest.json").read_text())
    champions = json.loads((unit_run / "champions.json").read_text())["champions"]
    assert manifest["run"]["fitness_kind"] == "score"
    assert [e["activation"] for e in manifest["classes"]] == [c["activation"] for c in champions]
    assert all("confidence" not in e and "log_prob" not in e for e in manifest["classes"])
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "activation" in rows[0] and "confidence" not in rows[0]
    assert [float(r["activation"]) for r in rows] == [c["activation"] for c in champions]


def test_the_page_shows_activations_not_percentages(unit_gallery):
    out, result = unit_gallery
    page = (out / "index.html").read_text()
    assert "Activation maximisation" in page and "3 units" in page
    assert "median activation" in page and "≥ 99" not in page
    cells = re.findall(r'<td class="conf"[^>]*>([^<]*)', page)
    assert len(cells) == 3 and not any("%" in c for c in cells)
    assert "<button>activation</button>" in page
    assert result.plots == ["progress.png", "activations.png"]
    assert not (out / "confidences.png").exists() and (out / "contact-sheet-01.png").is_file()


def test_verify_rescores_the_activations(unit_gallery):
    out, _ = unit_gallery
    report = verify(out)
    assert report.ok and report.checked == 6, [str(m) for m in report.mismatches]


def test_verify_names_an_activation_that_differs(unit_gallery, tmp_path):
    import shutil

    out, _ = unit_gallery
    copy = shutil.copytree(out, tmp_path / "g")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["classes"][1]["activation"] += 1.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = verify(copy)
    assert len(report.mismatches) == 2 and all(m.index == 1 for m in report.mismatches)  # native + enlarged
