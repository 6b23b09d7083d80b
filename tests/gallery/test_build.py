"""``export_run_gallery``: what a gallery folder holds, which classes in which order, re-exports."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from fault_helpers import invoke


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
