"""``onnx:PATH``: models exported to ONNX here, scored by ONNX Runtime like their torch originals."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: pip install 'evofool[onnx]'")
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx: pip install 'evofool[onnx]'")

from fault_helpers import assert_one_line_error, evofool  # noqa: E402
from run_helpers import invoke  # noqa: E402

from evofool import checkpoint  # noqa: E402
from evofool.errors import EvofoolError  # noqa: E402
from evofool.evaluator import BatchEvaluator  # noqa: E402
from evofool.models import list_models, load_model  # noqa: E402
from evofool.models.onnx import OnnxModule  # noqa: E402

DIGITS = [str(i) for i in range(10)]
RGB_CLASSES = ["a", "b", "c", "d", "e"]
RGB_SIDECAR = {"input_shape": [3, 32, 32], "class_names": RGB_CLASSES,
               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
COUNTS = (0, 1, 37, 250)  # empty, one, a partial chunk, several chunks (chunk 100)


# One torch thread (tests/conftest.py): tiny batches, and the cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


def export(module: nn.Module, example: torch.Tensor, path: Path, sidecar: dict | None,
           dynamic: bool = True) -> Path:
    """Writes ``module`` as ONNX (dynamic batch, or the example's batch) plus its sidecar."""
    axes = {"x": {0: "n"}, "y": {0: "n"}} if dynamic else None
    with warnings.catch_warnings():
        # The legacy (dynamo=False) exporter warns that it is legacy; onnxscript is not installed.
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes=axes, dynamo=False)
    if sidecar is not None:
        Path(str(path) + ".json").write_text(json.dumps(sidecar))
    return path


class SmallRGBNet(nn.Module):
    """3×32×32 → 5 classes, a conv net small enough to export in a test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 15 * 15, len(RGB_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def seeded_rgb_net(seed: int = 0) -> SmallRGBNet:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return SmallRGBNet().eval()
    finally:
        torch.random.set_rng_state(state)


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory) -> Path:
    """The shipped LeNet as ``lenet.onnx`` (dynamic batch), identity preprocessing."""
    folder = tmp_path_factory.mktemp("lenet")
    return export(load_model("lenet-mnist").module, torch.zeros(1, 1, 28, 28), folder / "lenet.onnx",
                  {"input_shape": [1, 28, 28], "class_names": DIGITS})


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> Path:
    """A small ``lenet-mnist`` run (its champions are the images to transfer and classify)."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    invoke("run", "--population", "20", "--generations", "3", "--seed", "2", "--out", out,
           "--quiet", "--no-gallery")
    return out


def random_images(n: int, shape, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def assert_scores_like(onnx_spec: str, reference, shape) -> None:
    onnx_eval = BatchEvaluator(load_model(onnx_spec), device="cpu")
    torch_eval = BatchEvaluator(reference, device="cpu")
    for n in COUNTS:
        images = random_images(n, shape, seed=n)
        got, want = onnx_eval.log_probs(images), torch_eval.log_probs(images)
        assert got.shape == want.shape == (n, reference.num_classes)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{onnx_spec}, {n} images")


# --- 1, 2: scores --------------------------------------------------------------------------------

def test_listed_and_lenet_scores_like_torch(lenet_onnx):
    assert "onnx:PATH" in [spec for spec, _ in list_models()]
    clf = load_model(f"onnx:{lenet_onnx}")
    assert clf.input_shape == (1, 28, 28) and clf.class_names == DIGITS and clf.outputs == "logits"
    assert clf.meta["differentiable"] is False and len(clf.meta["sha256"]) == 64
    assert_scores_like(f"onnx:{lenet_onnx}", load_model("lenet-mnist"), (1, 28, 28))


def test_rgb_model_with_normalisation_and_fixed_batches(tmp_path):
    """mean/std preprocessing runs in torch; graphs exported at batch 1 or 8 still score any N."""
    from evofool.models.base import Classifier
    from evofool.models.normalize import Normalize

    net = seeded_rgb_net()
    reference = Classifier(spec="torch", module=net, input_shape=(3, 32, 32), class_names=RGB_CLASSES,
                           preprocess=Normalize(RGB_SIDECAR["mean"], RGB_SIDECAR["std"]))
    specs = {"dynamic": export(net, torch.zeros(2, 3, 32, 32), tmp_path / "dyn.onnx", RGB_SIDECAR),
             "batch1": export(net, torch.zeros(1, 3, 32, 32), tmp_path / "b1.onnx", RGB_SIDECAR, dynamic=False),
             "batch8": export(net, torch.zeros(8, 3, 32, 32), tmp_path / "b8.onnx", RGB_SIDECAR, dynamic=False)}
    for name, path in specs.items():
        assert_scores_like(f"onnx:{path}", reference, (3, 32, 32))
    module = load_model(f"onnx:{specs['batch8']}").module
    assert isinstance(module, OnnxModule) and module.fixed_batch == 8
    assert module.to("cpu") is module and module.eval() is module and module.device == torch.device("cpu")
    assert list(module.parameters()) == [] and module.state_dict() == {}
    x = torch.rand(13, 3, 32, 32)  # one full sub-batch of 8, one padded
    with torch.inference_mode():
        out = module(x)
    assert out.dtype == torch.float32 and out.shape == (13, 5)
    with torch.no_grad():
        torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-5)


# --- 3-6: the commands that score through BatchEvaluator ---------------------------------------------

def run_args(spec: str, encoding: str, generations: int, out: Path) -> list:
    return ["run", "--model", spec, "--encoding", encoding, "--population", "20", "--generations",
            str(generations), "--seed", "4", "--out", out, "--quiet", "--no-gallery"]


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_run_then_resume_equals_a_straight_run(lenet_onnx, tmp_path, encoding):
    spec = f"onnx:{lenet_onnx}"
    straight, part = tmp_path / "straight", tmp_path / "part"
    invoke(*run_args(spec, encoding, 5, straight))
    doc = json.loads((straight / "config.json").read_text())
    assert doc["config"]["model"] == spec and doc["class_names"] == DIGITS
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in log] == [1, 2, 3, 4, 5] and log[-1]["evaluations"] == 100
    champions = json.loads((straight / "champions.json").read_text())["champions"]
    assert len(champions) == 10 and all((straight / c["file"]).is_file() for c in champions)
    invoke(*run_args(spec, encoding, 3, part))
    invoke("resume", part, "--generations", "5", "--quiet", "--no-gallery")
    _, a, _ = checkpoint.load(straight)
    _, b, _ = checkpoint.load(part)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if encoding == "direct":  # (5) one run is enough for export --verify
        assert "verified" in invoke("export", straight, "--verify").output


def test_classify_transfer_onto_the_onnx_copy(lenet_onnx, lenet_run, tmp_path):
    pngs = sorted(str(p) for p in (lenet_run / "champions").glob("*.png"))
    assert len(pngs) == 10

    def rows(spec: str) -> list[dict]:
        return [json.loads(line) for line in invoke("classify", "--model", spec, "--json", *pngs)
                .stdout.splitlines()]

    got, want = rows(f"onnx:{lenet_onnx}"), rows("lenet-mnist")
    for g, w in zip(got, want, strict=True):
        assert g["path"] == w["path"]
        assert [t["index"] for t in g["top"]] == [t["index"] for t in w["top"]]
        np.testing.assert_allclose([t["confidence"] for t in g["top"]], [t["confidence"] for t in w["top"]],
                                   atol=1e-5)
    report = tmp_path / "transfer.json"
    invoke("transfer", lenet_run, "--model", f"onnx:{lenet_onnx}", "--out", report, "--device", "cpu")
    doc = json.loads(report.read_text())
    assert doc["models"] == [f"onnx:{lenet_onnx}"] and len(doc["rows"]) == 10
    for row in doc["rows"]:  # the copy is the same network: it agrees with the run's own model
        assert row["others"][f"onnx:{lenet_onnx}"]["confidence"] == pytest.approx(row["own_confidence"], abs=1e-5)


# --- 7: gradients ---------------------------------------------------------------------------------

def test_gradient_commands_refuse_in_one_line(lenet_onnx, lenet_run, tmp_path):
    spec = f"onnx:{lenet_onnx}"
    png = sorted((lenet_run / "champions").glob("*.png"))[0]
    proc = evofool("ascent", "--model", spec, "--steps", "2", "--out", tmp_path / "a", "--quiet", "--device", "cpu")
    assert_one_line_error(proc, "ascent needs gradients", spec, "ONNX Runtime", "evofool run", "torchscript:")
    assert not (tmp_path / "a").exists()
    proc = evofool("perturb", png, "--target", "3", "--model", spec, "--out", tmp_path / "p", "--device", "cpu")
    assert_one_line_error(proc, "perturb needs gradients", spec, "black-box")
    proc = evofool("run", "--model", f"unit:conv2.5:{spec}", "--population", "20", "--generations", "2",
                   "--out", tmp_path / "u", "--quiet", "--no-gallery")
    assert_one_line_error(proc, "unit:", spec, "ONNX Runtime")
    # A wrapper that does not copy the meta (smooth:) is still refused, in-process too.
    from evofool.experiments.ascent import AscentSettings, run_ascent
    with pytest.raises(EvofoolError, match="ascent needs gradients"):
        run_ascent(load_model(f"smooth:gauss=1:{spec}"), AscentSettings(classes=[0], steps=1), tmp_path / "s")
    assert not (tmp_path / "s").exists()


# --- 8: bad files ---------------------------------------------------------------------------------

def one_line(spec: str, *fragments: str) -> str:
    with pytest.raises(EvofoolError) as info:
        load_model(spec)
    message = str(info.value)
    assert "\n" not in message and message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_bad_files_are_one_line_errors(lenet_onnx, tmp_path, monkeypatch):
    sidecar = {"input_shape": [1, 28, 28], "class_names": DIGITS}
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    Path(str(junk) + ".json").write_text(json.dumps(sidecar))
    one_line(f"onnx:{junk}", str(junk), "not an ONNX model")

    shape = tmp_path / "shape.onnx"
    shutil.copy(lenet_onnx, shape)
    Path(str(shape) + ".json").write_text(json.dumps({**sidecar, "input_shape": [1, 32, 32]}))
    one_line(f"onnx:{shape}", str(shape), "1×28×28", "[1, 32, 32]")

    classes = tmp_path / "classes.onnx"
    shutil.copy(lenet_onnx, classes)
    Path(str(classes) + ".json").write_text(json.dumps({**sidecar, "class_names": DIGITS[:7]}))
    one_line(f"onnx:{classes}", str(classes), "10 classes", "7 class names")

    channels_last = export(nn.Flatten().eval(), torch.zeros(1, 32, 32, 3), tmp_path / "nhwc.onnx",
                           {**RGB_SIDECAR, "class_names": ["x"]})
    one_line(f"onnx:{channels_last}", "channels-last")

    bare = tmp_path / "bare.onnx"
    shutil.copy(lenet_onnx, bare)
    one_line(f"onnx:{bare}", str(bare), "no metadata sidecar", f"{bare}.json")
    one_line(f"onnx:{tmp_path / 'missing.onnx'}", "does not exist")
    one_line(f"onnx:{tmp_path}", "not a regular file")

    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if not installed
    one_line(f"onnx:{lenet_onnx}", "onnx: models need ONNX Runtime: pip install 'evofool[onnx]'")


# --- 9: weights identity for Ray workers ----------------------------------------------------------

def test_fingerprint_follows_the_file_and_workers_load_the_spec(tmp_path):
    pytest.importorskip("ray", reason="evofool.distributed needs Ray: pip install 'evofool[ray]'")
    from evofool.config import RunConfig
    from evofool.distributed import ScoringWorker, model_fingerprint

    path = export(seeded_rgb_net(0), torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx", RGB_SIDECAR)
    spec = f"onnx:{path}"
    first = model_fingerprint(load_model(spec))
    assert model_fingerprint(load_model(spec)) == first  # the same file, the same identity
    export(seeded_rgb_net(1), torch.zeros(1, 3, 32, 32), path, None)  # other weights, same graph
    assert model_fingerprint(load_model(spec)) != first
    # The actor's code, in-process: it loads the same spec and answers the same fingerprint.
    cfg = RunConfig(model=spec, encoding="direct", population=20, generations=1, device="cpu").validate()
    threads = torch.get_num_threads()
    try:
        worker = ScoringWorker(cfg.to_dict(), "cpu", 1)
    finally:
        torch.set_num_threads(threads)
    assert worker.ready()["fingerprint"] == model_fingerprint(load_model(spec))
