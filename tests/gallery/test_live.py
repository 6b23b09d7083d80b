"""The live gallery: written at checkpoints during ``evofool run``, cheap, never fatal."""

from __future__ import annotations

import json
from types import SimpleNamespace

from evofool.gallery import export_gallery, refresh_live
from evofool.runfolder import RunFolder


def job_of(folder: RunFolder) -> SimpleNamespace:
    """What a checkpoint hook is given (``hook(job)``), as far as ``refresh_live`` reads it."""
    return SimpleNamespace(folder=folder)


def test_run_writes_its_gallery_at_checkpoints(tmp_path, mnist_model, cli_run):
    out = tmp_path / "run"
    proc = cli_run("run", "--model", mnist_model, "--generations", "10", "--population", "50",
                   "--checkpoint-every", "5", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    page = (out / "gallery" / "index.html").read_text()
    assert page.count("<tr data-class=") == 10
    manifest = json.loads((out / "gallery" / "manifest.json").read_text())
    assert manifest["run"]["generations_done"] == 10
    assert manifest["export"]["live"] and manifest["export"]["complete"]  # the final checkpoint: full gallery
    assert (out / "gallery" / "contact-sheet-01.png").is_file()
    assert 'http-equiv="refresh"' not in page  # finished: no more reloading


def test_live_refresh_is_light_until_the_run_finishes(tmp_path, fake_run):
    folder = fake_run(tmp_path / "run", 30, shape=(1, 28, 28), generations=40)
    doc = json.loads((folder.path / "config.json").read_text())
    doc["config"]["generations"] = 100  # the log stops at 40: still running
    (folder.path / "config.json").write_text(json.dumps(doc))
    refresh_live(job_of(folder))
    gallery = folder.path / "gallery"
    page = (gallery / "index.html").read_text()
    assert "Live gallery: generation 40 of 100" in page and 'http-equiv="refresh"' in page
    assert not list(gallery.glob("contact-sheet-*.png"))
    assert len(list(gallery.glob("images/*.png"))) == 30  # native copies only, no enlargements

    # A second refresh with nothing changed re-writes no image.
    result = export_gallery(folder.path, gallery, live=True)
    assert result.images == 0 and result.reused == 30


def test_live_refresh_reuses_unchanged_sheet_pages(tmp_path, fake_run):
    folder = fake_run(tmp_path / "run", 150, shape=(1, 28, 28))
    gallery = folder.path / "gallery"
    first = export_gallery(folder.path, gallery, live=True)
    assert first.sheets == ["contact-sheet-01.png", "contact-sheet-02.png"] and first.sheets_rendered == 2
    # Class 120 (page 2) gets a better champion; page 1 stays as it is.
    champions = json.loads((folder.path / "champions.json").read_text())
    champions["champions"][120].update(confidence=0.999999, log_prob=-1.000000500029089e-06, generation=41)
    (folder.path / "champions.json").write_text(json.dumps(champions))
    second = export_gallery(folder.path, gallery, live=True)
    assert second.reused == 149 and second.images == 2 and second.sheets_rendered == 1


def test_refresh_live_never_raises(tmp_path, capsys):
    refresh_live(job_of(RunFolder(tmp_path / "not-a-run")))
    err = capsys.readouterr().err
    assert err.startswith("warning: gallery refresh failed") and "not an evofool run folder" in err
    assert len(err.strip().splitlines()) == 1


def test_disk_full_during_a_live_refresh_is_one_warning_and_leaves_no_temp_file(tmp_path, fake_run, capsys,
                                                                                monkeypatch):
    import errno
    import os

    from evofool import safefs

    folder = fake_run(tmp_path / "run", 12, shape=(1, 28, 28))

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safefs, "write_all", full)
    refresh_live(job_of(folder))
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: gallery refresh failed") and "No space left" in err[0]
    assert not list(folder.path.rglob("*.tmp"))
    refresh_live(job_of(folder))  # space is back
    assert capsys.readouterr().err == ""
    manifest = json.loads((folder.path / "gallery" / "manifest.json").read_text())
    assert len(manifest["classes"]) == 12
    assert all((folder.path / "gallery" / e["image"]).is_file() for e in manifest["classes"])
