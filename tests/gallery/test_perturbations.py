"""``evofool export`` of an ``evofool perturb`` folder: its images, their perturbations, one page."""

from __future__ import annotations

import json

import pytest

from evofool.gallery.perturbations import is_perturb_folder
from fault_helpers import invoke, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def perturbed(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("perturb") / "out"
    result = invoke("perturb", "--mnist-test", 2, "--data", mnist_dir, "--search-steps", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"evofool export {out}" in result.output  # perturb says how to see its output
    return out


def test_export_shows_every_image_with_its_perturbation(perturbed):
    assert is_perturb_folder(perturbed)
    result = invoke("export", perturbed)
    assert result.exit_code == 0, result.output
    assert "(2 images" in result.output
    gallery = perturbed / "gallery"
    report = json.loads((perturbed / "perturb.json").read_text())
    manifest = json.loads((gallery / "manifest.json").read_text())
    assert manifest["source"] == str(perturbed.resolve()) and len(manifest["images"]) == 2
    for entry in report["results"]:
        for name in entry["files"].values():
            assert (gallery / "images" / name).read_bytes() == (perturbed / name).read_bytes()
    page = (gallery / "index.html").read_text()
    assert page.count('<img class="px"') == 6 and "Minimal perturbations" in page
    assert "http://" not in page and "https://" not in page
    assert invoke("export", perturbed).exit_code == 0  # its own gallery: exported again in place


def test_run_only_options_and_foreign_folders_are_refused(perturbed, tmp_path):
    one_line_error(invoke("export", perturbed, "--top", 1), "is a perturb folder", "--top")
    one_line_error(invoke("export", perturbed, "--verify"), "is a perturb folder")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_line_error(invoke("export", perturbed, "--out", other), "is not empty")
    assert invoke("export", perturbed, "--out", other, "--force").exit_code == 0
    assert (other / "notes.txt").read_text() == "mine"


def test_a_damaged_report_is_one_line(perturbed, tmp_path):
    import shutil

    copy = shutil.copytree(perturbed, tmp_path / "copy", ignore=shutil.ignore_patterns("gallery"))
    report = json.loads((copy / "perturb.json").read_text())
    report["results"][0]["files"]["original"] = "../../etc/passwd"
    (copy / "perturb.json").write_text(json.dumps(report))
    one_line_error(invoke("export", copy), "perturb.json is damaged")
