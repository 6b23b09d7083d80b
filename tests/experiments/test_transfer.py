"""``evofool transfer``: a real small run's champions scored by other LeNets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evofool.models import load_model
from evofool.models.lenet import LeNet, save_lenet
from fault_helpers import invoke, one_line_error


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real finished run against lenet-mnist (30 generations of 100)."""
    out = tmp_path_factory.mktemp("transfer") / "run"
    result = invoke("run", "--generations", 30, "--population", 100, "--seed", 0, "--out", out,
                    "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    return out


def softmax_of_pngs(spec: str, run: Path, champions: list[dict]) -> torch.Tensor:
    """Independent scoring: read each PNG with Pillow, run the module, softmax in float64."""
    clf = load_model(spec)
    x = torch.stack([torch.from_numpy(np.array(Image.open(run / c["file"]), dtype=np.uint8))
                     for c in champions]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        return torch.softmax(clf.module(x).double(), dim=1)


def test_transfer_to_lenet_mnist_b(run_dir):
    result = invoke("transfer", run_dir, "--model", "lenet-mnist-b")
    assert result.exit_code == 0, result.output
    champions = json.loads((run_dir / "champions.json").read_text())["champions"]
    assert len(champions) == 10
    doc = json.loads((run_dir / "transfer.json").read_text())
    assert doc["run_model"] == "lenet-mnist" and doc["models"] == ["lenet-mnist-b"]
    expected = softmax_of_pngs("lenet-mnist-b", run_dir, champions)
    for k, (row, c) in enumerate(zip(doc["rows"], champions)):
        assert row["index"] == c["class"] and row["own_confidence"] == c["confidence"]
        other = row["others"]["lenet-mnist-b"]
        assert other["confidence"] == pytest.approx(float(expected[k, c["class"]]), abs=1e-6)
        assert other["top1"] == int(expected[k].argmax())
        assert other["top1_confidence"] == pytest.approx(float(expected[k].max()), abs=1e-6)
        assert other["top1_name"] == str(other["top1"])
    own = expected[torch.arange(10), torch.tensor([c["class"] for c in champions])]
    summary = doc["summary"]["lenet-mnist-b"]
    assert summary["n50"] == int((own >= 0.5).sum()) and summary["n99"] == int((own >= 0.99).sum())
    assert summary["frac50"] == pytest.approx(summary["n50"] / 10)
    # The CSV holds the same numbers, one row per class.
    rows = list(csv.DictReader(io.StringIO((run_dir / "transfer.csv").read_text())))
    assert [int(r["class"]) for r in rows] == [c["class"] for c in champions]
    assert float(rows[3]["lenet-mnist-b confidence"]) == pytest.approx(doc["rows"][3]["others"]["lenet-mnist-b"]
                                                                       ["confidence"], rel=1e-8)
    # The printed table: a header, one line per class, the summary lines.
    out = result.output.splitlines()
    assert out[0].startswith(f"run {run_dir}: 10 champions; own model lenet-mnist")
    assert "lenet-mnist-b" in out[1] and "top-1 (confidence)" in out[1]
    assert any(line.startswith(f"lenet-mnist-b: {summary['n50']}/10") for line in out)
    assert f"{100 * doc['rows'][0]['others']['lenet-mnist-b']['confidence']:.4f}%" in out[2]


def test_transfer_to_its_own_model_reproduces_the_champions(run_dir, tmp_path):
    """Scoring the saved 8-bit PNGs with the run's own model gives champions.json's numbers."""
    out = tmp_path / "own.json"
    result = invoke("transfer", run_dir, "--model", "lenet-mnist", "--model", "lenet-mnist-b", "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["models"] == ["lenet-mnist", "lenet-mnist-b"]
    for row in doc["rows"]:
        assert row["others"]["lenet-mnist"]["confidence"] == pytest.approx(row["own_confidence"], rel=1e-9)
        assert set(row["others"]) == {"lenet-mnist", "lenet-mnist-b"}
    assert doc["summary"]["lenet-mnist"]["n50"] == doc["summary"]["own"]["n50"]
    assert not (tmp_path / "own.csv").exists()  # --out writes just the one file asked for


def test_csv_out(run_dir, tmp_path):
    out = tmp_path / "sub" / "t.csv"
    result = invoke("transfer", run_dir, "--model", "ensemble:lenet-mnist,lenet-mnist-b", "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 10 and "ensemble:lenet-mnist,lenet-mnist-b top1" in rows[0]


def test_errors_are_one_line(run_dir, tmp_path):
    names = [f"c{i}" for i in range(10)]
    torch.manual_seed(0)
    save_lenet(LeNet(10), tmp_path / "other.safetensors", {"class_names": names})
    save_lenet(LeNet(11), tmp_path / "eleven.safetensors", {"class_names": [str(i) for i in range(11)]})
    one_line_error(invoke("transfer", run_dir, "--model", f"lenet:{tmp_path / 'other.safetensors'}"),
                   "other classes than the run", "c0, c1")
    one_line_error(invoke("transfer", run_dir, "--model", f"lenet:{tmp_path / 'eleven.safetensors'}"),
                   "11 classes")
    one_line_error(invoke("transfer", run_dir, "--model", "unit:conv2.1,conv2.2:lenet-mnist"), "raw unit scores")
    one_line_error(invoke("transfer", run_dir, "--model", "no-such-model"), "unknown model")
    one_line_error(invoke("transfer", run_dir, "--model", "lenet-mnist-b", "--out", tmp_path / "x.txt"),
                   ".json or .csv")
    one_line_error(invoke("transfer", tmp_path, "--model", "lenet-mnist-b"), "not an evofool run folder")
    one_line_error(invoke("transfer", run_dir), "--model")
    one_line_error(invoke("transfer", run_dir, "--model", "lenet-mnist-b", "--model", "lenet-mnist-b"), "twice")


def test_a_linked_report_is_refused_before_anything_is_written(run_dir, tmp_path):
    """A link planted where the report goes (transfer.csv wrote through it): one line, the
    link's target untouched, and transfer.json not written either."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for name in ("transfer.json", "transfer.csv"):
        (run / name).unlink(missing_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run / "transfer.csv").symlink_to(victim)
    one_line_error(invoke("transfer", run, "--model", "lenet-mnist-b"), "transfer.csv is a symbolic link")
    assert victim.read_text() == "keep" and not (run / "transfer.json").exists()


def test_a_unit_runs_champions_are_not_transferred(tmp_path):
    """A ``unit:`` run's champions maximise activations: no class confidence to carry to another model."""
    unit = tmp_path / "unit"
    result = invoke("run", "--model", "unit:conv2.5,conv2.7:lenet-mnist", "--generations", 2, "--population", 20,
                    "--out", unit, "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    one_line_error(invoke("transfer", unit, "--model", "lenet-mnist-b"), "is a unit run",
                   "raw activations", "nothing to transfer")
    assert not (unit / "transfer.json").exists()


def test_transfer_never_overwrites_a_runs_files_nor_writes_beside_a_running_run(run_dir, tmp_path):
    """--out onto a file transfer did not write (a run's config.json, a user's notes) is one line
    and leaves it as it was; a run folder whose run is going on (its lock held) gets no report,
    by default or by --out into it; a report transfer wrote is replaced."""
    import shutil

    from evofool import safefs

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for name in ("transfer.json", "transfer.csv"):  # another test's reports
        (run / name).unlink(missing_ok=True)
    for name in ("config.json", "summary.json", "champions.json"):
        before = (run / name).read_bytes()
        one_line_error(invoke("transfer", run, "--model", "lenet-mnist-b", "--out", run / name),
                       "is not a transfer report")
        assert (run / name).read_bytes() == before
    notes = tmp_path / "notes.csv"
    notes.write_text("mine\n")
    one_line_error(invoke("transfer", run, "--model", "lenet-mnist-b", "--out", notes), "is not a transfer report")
    assert notes.read_text() == "mine\n"
    with safefs.lock_folder(run):  # as a running `evofool run` holds it
        for extra in ([], ["--out", run / "t.json"]):
            one_line_error(invoke("transfer", run, "--model", "lenet-mnist-b", *extra), "in use", "--out")
        assert not (run / "transfer.json").exists() and not (run / "t.json").exists()
    for _ in range(2):  # the run has ended: its own reports are written, then replaced
        result = invoke("transfer", run, "--model", "lenet-mnist-b")
        assert result.exit_code == 0, result.output
    assert json.loads((run / "transfer.json").read_text())["models"] == ["lenet-mnist-b"]
    assert (run / "transfer.csv").read_text().startswith("class,name,file,own confidence")
