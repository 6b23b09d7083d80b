"""``evofool export`` end to end on a real MNIST run: files, manifests, verify, errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from evofool.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_export_writes_every_part_and_verifies(mnist_run, mnist_gallery):
    gallery, proc = mnist_gallery
    assert proc.returncode == 0, proc.stderr
    assert "verified 20 images" in proc.stdout  # 10 native + 10 enlarged
    natives = sorted((gallery / "images").glob("00??-?.png"))
    assert [p.name for p in natives] == [f"{k:04d}-{k}.png" for k in range(10)]
    for k, native in enumerate(natives):
        with Image.open(native) as im:
            assert im.size == (28, 28) and im.mode == "L"
        # The native copy is the archived file, byte for byte.
        assert native.read_bytes() == (mnist_run / "champions" / native.name).read_bytes()
        with Image.open(gallery / "images" / f"{k:04d}-{k}-x8.png") as big, Image.open(native) as small:
            assert big.size == (224, 224)
            # Nearest neighbour: every source pixel is a crisp 8×8 block.
            b, s = np.asarray(big), np.asarray(small)
            assert np.array_equal(b, np.kron(s, np.ones((8, 8), dtype=np.uint8)))
    assert (gallery / "contact-sheet-01.png").is_file()
    assert not (gallery / "contact-sheet-02.png").exists()
    for name in ("index.html", "progress.png", "confidences.png"):
        assert (gallery / name).stat().st_size > 1000, name


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


def test_index_html_is_self_contained(mnist_gallery):
    gallery, _ = mnist_gallery
    page = (gallery / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert page.count("<tr data-class=") == 10
    for k in range(10):
        assert f'src="images/{k:04d}-{k}.png"' in page
    assert 'id="filter"' in page and 'id="order"' in page


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


def test_top_classes_and_scale(mnist_run, tmp_path):
    result = invoke("export", str(mnist_run), "--out", str(tmp_path / "top"), "--top", "3", "--scale", "4")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "top" / "manifest.json").read_text())
    confs = [e["confidence"] for e in manifest["classes"]]
    assert len(confs) == 3 and confs == sorted(confs, reverse=True)
    with Image.open(tmp_path / "top" / manifest["classes"][0]["enlarged"]) as im:
        assert im.size == (112, 112)

    result = invoke("export", str(mnist_run), "--out", str(tmp_path / "some"), "--classes", "7,2", "--scale", "1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "some" / "manifest.json").read_text())
    assert [e["class"] for e in manifest["classes"]] == [7, 2]
    assert all(e["enlarged"] is None for e in manifest["classes"])
    assert sorted(p.name for p in (tmp_path / "some" / "images").iterdir()) == ["0002-2.png", "0007-7.png"]


def test_reexport_removes_files_it_no_longer_lists(mnist_run, tmp_path):
    out = tmp_path / "g"
    assert invoke("export", str(mnist_run), "--out", str(out)).exit_code == 0
    assert invoke("export", str(mnist_run), "--out", str(out), "--classes", "1").exit_code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0001-1-x8.png", "0001-1.png"]


@pytest.mark.parametrize("args, fragment", [
    (["--top", "0"], "--top must be at least 1"),
    (["--classes", "11"], "unknown class '11'"),
    (["--classes", "banana"], "unknown class 'banana'"),
    (["--scale", "0"], "--scale must be at least 1"),
])
def test_bad_options_are_one_line_errors(mnist_run, tmp_path, args, fragment):
    assert_one_line_error(invoke("export", str(mnist_run), "--out", str(tmp_path / "x"), *args), fragment)


def test_not_a_run_folder(tmp_path, cli_run):
    assert_one_line_error(invoke("export", str(tmp_path)), "not an evofool run folder")
    assert_one_line_error(invoke("export", str(tmp_path / "nowhere")), "not an evofool run folder")
    proc = cli_run("export", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def _broken_copy(mnist_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "broken"
    shutil.copytree(mnist_run, run, ignore=shutil.ignore_patterns("gallery"))
    return run


def test_missing_champions_json(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions.json").unlink()
    assert_one_line_error(invoke("export", str(run)), "champions.json")
    assert not (run / "gallery").exists()


def test_missing_champion_png(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions" / "0004-4.png").unlink()
    assert_one_line_error(invoke("export", str(run)), "0004-4.png is missing")


@pytest.mark.parametrize("name, text", [
    ("champions.json", '{"num_classes": 10, "champions": [{"class": 1'),
    ("champions.json", '{"num_classes": 10, "champions": [{"class": "x"}]}'),
    ("config.json", "{not json"),
])
def test_damaged_json(mnist_run, tmp_path, name, text):
    run = _broken_copy(mnist_run, tmp_path)
    (run / name).write_text(text)
    assert_one_line_error(invoke("export", str(run)), name, "damaged")


def test_damaged_png(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions" / "0002-2.png").write_bytes(b"not a png")
    assert_one_line_error(invoke("export", str(run)), "0002-2.png is not a readable image")


def _full_disk_at(n: int):
    """A ``safefs.write_all`` whose ``n``-th call writes half its data, then fails with ENOSPC."""
    import errno
    import os

    from evofool import safefs

    real, calls = safefs.write_all, []

    def write_all(fd, data):
        calls.append(fd)
        if len(calls) == n:
            real(fd, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    return write_all


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("at", [1, 5, 25])
def test_disk_full_during_export_is_one_line_and_a_second_export_completes(mnist_run, tmp_path, monkeypatch, at):
    from evofool import safefs

    run = _broken_copy(mnist_run, tmp_path)
    before = _files(run)
    monkeypatch.setattr(safefs, "write_all", _full_disk_at(at))
    result = invoke("export", str(run))
    monkeypatch.undo()
    assert_one_line_error(result, "could not write the gallery", "No space left on device", "run folder is untouched")
    assert not list(run.rglob("*.tmp"))
    assert {k: v for k, v in _files(run).items() if not k.startswith("gallery")} == before
    # Space is back: the half-written gallery is recognised as this run's and completed.
    result = invoke("export", str(run))
    assert result.exit_code == 0, result.output
    assert len(list((run / "gallery" / "images").glob("*.png"))) == 20
    assert json.loads((run / "gallery" / "manifest.json").read_text())["export"]["complete"]
