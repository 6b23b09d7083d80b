"""``evofool export`` on the command line: its options and every failure as one line (the gallery's
parts are tested beside their modules: test_build, test_manifest, test_html, test_verify...)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fault_helpers import invoke, one_line_error


@pytest.mark.parametrize("args, fragment", [
    (["--top", "0"], "--top must be at least 1"),
    (["--classes", "11"], "unknown class '11'"),
    (["--classes", "banana"], "unknown class 'banana'"),
    (["--scale", "0"], "--scale must be at least 1"),
])
def test_bad_options_are_one_line_errors(mnist_run, tmp_path, args, fragment):
    one_line_error(invoke("export", str(mnist_run), "--out", str(tmp_path / "x"), *args), fragment)


def test_not_a_run_folder(tmp_path, cli_run):
    one_line_error(invoke("export", str(tmp_path)), "not an evofool run folder")
    one_line_error(invoke("export", str(tmp_path / "nowhere")), "not an evofool run folder")
    proc = cli_run("export", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def _broken_copy(mnist_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "broken"
    shutil.copytree(mnist_run, run, ignore=shutil.ignore_patterns("gallery"))
    return run


def test_missing_champions_json(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions.json").unlink()
    one_line_error(invoke("export", str(run)), "champions.json")
    assert not (run / "gallery").exists()


def test_missing_champion_png(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions" / "0004-4.png").unlink()
    one_line_error(invoke("export", str(run)), "0004-4.png is missing")


@pytest.mark.parametrize("name, text", [
    ("champions.json", '{"num_classes": 10, "champions": [{"class": 1'),
    ("champions.json", '{"num_classes": 10, "champions": [{"class": "x"}]}'),
    ("config.json", "{not json"),
])
def test_damaged_json(mnist_run, tmp_path, name, text):
    run = _broken_copy(mnist_run, tmp_path)
    (run / name).write_text(text)
    one_line_error(invoke("export", str(run)), name, "damaged")


def test_damaged_png(mnist_run, tmp_path):
    run = _broken_copy(mnist_run, tmp_path)
    (run / "champions" / "0002-2.png").write_bytes(b"not a png")
    one_line_error(invoke("export", str(run)), "0002-2.png is not a readable image")


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
    one_line_error(result, "could not write the gallery", "No space left on device", "run folder is untouched")
    assert not list(run.rglob("*.tmp"))
    assert {k: v for k, v in _files(run).items() if not k.startswith("gallery")} == before
    # Space is back: the half-written gallery is recognised as this run's and completed.
    result = invoke("export", str(run))
    assert result.exit_code == 0, result.output
    assert len(list((run / "gallery" / "images").glob("*.png"))) == 20
    assert json.loads((run / "gallery" / "manifest.json").read_text())["export"]["complete"]


def test_out_through_dot_dot_or_a_link_to_the_run_is_checked_where_it_lands(mnist_run, tmp_path):
    """--out others/x/.. is others (not a new empty folder): refused without --force, their
    page untouched, no x made; r/x/.. is the run folder itself; a link to the run folder
    reaches its gallery (was a traceback)."""
    import shutil

    run = tmp_path / "r"
    shutil.copytree(mnist_run, run)
    others = tmp_path / "others"
    others.mkdir()
    (others / "index.html").write_text("THEIR PAGE")
    one_line_error(invoke("export", str(run), "--out", str(others / "x" / "..")), "is not empty and is not a gallery")
    assert sorted(p.name for p in others.iterdir()) == ["index.html"]
    assert (others / "index.html").read_text() == "THEIR PAGE"
    one_line_error(invoke("export", str(run), "--out", str(run / "x" / "..")), "cannot export into the run folder")
    (tmp_path / "rlink").symlink_to(run)
    result = invoke("export", str(run), "--out", str(tmp_path / "rlink" / "gallery"))
    assert result.exit_code == 0, result.output
    assert (run / "gallery" / "index.html").is_file()
