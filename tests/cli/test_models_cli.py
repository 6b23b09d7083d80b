"""``evofool classify`` / ``models`` end to end, and reproducible ``train_lenet``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evofool.imageio import load_image, save_png
from evofool.models.lenet import LeNet
from fault_helpers import invoke, one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits(mnist_test, tmp_path_factory):
    """Three real MNIST test digits as PNGs: [(path, label)]."""
    images, labels = mnist_test
    folder = tmp_path_factory.mktemp("digits")
    out = []
    for i in (0, 1, 2):
        path = save_png(images[i].unsqueeze(0), folder / f"digit{i}.png")
        out.append((path, int(labels[i])))
    return out


def test_png_round_trip_is_exact(mnist_test, tmp_path):
    img = mnist_test[0][5].unsqueeze(0)
    path = save_png(img, tmp_path / "sub" / "d.png")
    assert torch.equal(load_image(path, (1, 28, 28)), img)
    rgb = load_image(path, (3, 28, 28))
    assert rgb.shape == (3, 28, 28) and torch.equal(rgb[1], img[0])


def test_classify_real_digits(digits):
    result = invoke("classify", *(str(p) for p, _ in digits))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for path, label in digits:
        at = lines.index(str(path))
        ranked = lines[at + 1:at + 6]
        assert len(ranked) == 5
        assert ranked[0].split()[-1] == str(label)  # top-1 is the true label
        assert float(ranked[0].split()[0].rstrip("%")) > 90.0


def test_classify_json(digits):
    result = invoke("classify", "--json", "--top", "3", *(str(p) for p, _ in digits))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p, _ in digits]
    for row, (_, label) in zip(rows, digits):
        assert len(row["top"]) == 3
        assert set(row["top"][0]) == {"index", "name", "confidence"}
        assert row["top"][0]["index"] == label and row["top"][0]["name"] == str(label)
        confs = [t["confidence"] for t in row["top"]]
        assert confs == sorted(confs, reverse=True) and 0 < sum(confs) <= 1 + 1e-6


def test_classify_with_lenet_b_by_spec(digits):
    path, label = digits[0]
    result = invoke("classify", "--json", "--model", "lenet-mnist-b", str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top"][0]["index"] == label


def test_classify_non_image_file(tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not really a picture")
    one_line_error(invoke("classify", str(bogus)), str(bogus))


def test_classify_wrong_size(tmp_path):
    path = save_png(torch.zeros(1, 32, 32, dtype=torch.uint8), tmp_path / "big.png")
    one_line_error(invoke("classify", str(path)),
                          "is 32×32 but model lenet-mnist takes 28×28")


def test_classify_missing_file(tmp_path):
    one_line_error(invoke("classify", str(tmp_path / "nope.png")), "nope.png")


def test_classify_unknown_model(digits):
    one_line_error(invoke("classify", "--model", "alexnet-imaginary", str(digits[0][0])),
                          "unknown model", "lenet-mnist")


def test_classify_missing_torchscript_file(digits, tmp_path):
    one_line_error(
        invoke("classify", "--model", f"torchscript:{tmp_path / 'gone.pt'}", str(digits[0][0])),
        "gone.pt", "does not exist")


def test_models_lists_specs():
    result = invoke("models")
    assert result.exit_code == 0
    specs = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    for spec in ("lenet-mnist", "lenet-mnist-b", "lenet:PATH", "torchscript:PATH", "torchvision:NAME"):
        assert spec in specs


def test_python_dash_m_subprocess(digits):
    path, label = digits[0]
    proc = subprocess.run([sys.executable, "-m", "evofool", "classify", "--json", str(path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top"][0]["index"] == label
    bad = subprocess.run([sys.executable, "-m", "evofool", "classify", "--model", "nope", str(path)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_train_missing_data_folder(tmp_path):
    one_line_error(invoke("train", "--data", str(tmp_path / "none"), "--out",
                                 str(tmp_path / "w.safetensors")), "does not exist")


def test_train_lenet_is_reproducible(mnist_dir):
    from evofool.data import load_idx_dataset
    from evofool.train import train_lenet

    images, labels = load_idx_dataset(mnist_dir, "train")
    x, y = images[:512], labels[:512]
    a = train_lenet(x, y, 10, seed=5, epochs=1, batch_size=64).model.state_dict()
    b = train_lenet(x, y, 10, seed=5, epochs=1, batch_size=64).model.state_dict()
    c = train_lenet(x, y, 10, seed=6, epochs=1, batch_size=64).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["ip2.weight"], c["ip2.weight"])
    # It trained: the weights moved away from the seed's initial values.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        init = LeNet(10).state_dict()
    assert all(not torch.equal(a[k], init[k]) for k in a)
