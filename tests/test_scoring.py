"""``build_scoring``: one scoring stack for runs, resumes, Ray workers, transfer and classify.

The runtime ``auto`` resolves once per run and is recorded; fallbacks to torch say so on
exactly one ``note:`` line; a recorded ``onnxruntime`` that cannot be had is an error.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: pip install onnxruntime")
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx: pip install onnx")

from fault_helpers import invoke, one_line_error  # noqa: E402
from resume_helpers import assert_same_result  # noqa: E402

from evofool import runtime  # noqa: E402
from evofool.config import RunConfig  # noqa: E402
from evofool.errors import EvofoolError  # noqa: E402
from evofool.job import Job, build_engine  # noqa: E402
from evofool.scoring import build_scoring, recorded_runtime, resolve_threads  # noqa: E402

HAS_RAY = importlib.util.find_spec("ray") is not None
MISSING_NOTE = "note: ONNX Runtime is not installed; scoring with torch (pip install onnxruntime)"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's own export cache (never the user's ~/.cache)."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


# One thread, and OMP_NUM_THREADS=1 (tests/conftest.py): the machine's cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


def no_onnxruntime(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now fails


def note_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


def run_args(out, generations: int, encoding: str = "direct", *extra) -> list:
    return ["run", "--population", "50", "--generations", generations, "--seed", "3", "--encoding", encoding,
            "--checkpoint-every", "2", "--out", out, "--quiet", "--no-gallery", *extra]



# --- choosing the runtime ------------------------------------------------------------------------

def test_auto_on_the_cpu_is_onnxruntime_and_silent(capsys):
    classifier, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "onnxruntime" and evaluator.graph is not None
    assert evaluator.record() == {"runtime": "onnxruntime", "chunk": 100, "precision": "float32"}
    assert capsys.readouterr().err == ""
    _, torch_only = build_scoring(classifier, device="cpu", runtime="torch")
    assert torch_only.runtime == "torch" and torch_only.graph is None


def test_without_onnxruntime_auto_is_torch_with_one_note(monkeypatch, capsys):
    no_onnxruntime(monkeypatch)
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "torch"
    assert capsys.readouterr().err.splitlines() == [MISSING_NOTE]
    with pytest.raises(EvofoolError, match=r"^--runtime onnxruntime: ONNX Runtime is not installed; "
                                           r"use --runtime torch$"):
        build_scoring("lenet-mnist", device="cpu", runtime="onnxruntime")


def test_without_onnxruntime_a_run_scores_on_torch_with_one_note(monkeypatch, tmp_path):
    no_onnxruntime(monkeypatch)
    result = invoke(*run_args(tmp_path / "r", 2))
    assert result.exit_code == 0, result.output
    assert note_lines(result.stderr) == [MISSING_NOTE]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["runtime"] == "torch"


def test_unit_specs_stay_on_torch(capsys):
    _, evaluator = build_scoring("unit:conv2.5,conv2.7:lenet-mnist", device="cpu")
    assert evaluator.runtime == "torch" and capsys.readouterr().err == ""
    with pytest.raises(EvofoolError, match="forward hooks.*use --runtime torch"):
        build_scoring("unit:conv2.5:lenet-mnist", device="cpu", runtime="onnxruntime")


def test_autocast_precisions_stay_on_torch(capsys, monkeypatch):
    from evofool import scoring

    monkeypatch.setattr(scoring, "native_cpu_bfloat16", lambda: True)  # no CPU note, whatever the CPU
    _, evaluator = build_scoring("lenet-mnist", device="cpu", precision="bfloat16")
    assert evaluator.record() == {"runtime": "torch", "chunk": 100, "precision": "bfloat16"}
    assert capsys.readouterr().err == ""


def test_a_failed_check_falls_back_to_torch_with_one_note(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "TOLERANCE", 0.0)  # float32 kernels differ in the last bits
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "torch" and evaluator.graph is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: ONNX Runtime's scores of lenet-mnist differ from torch's (max |Δ log-prob| ")
    assert line.endswith("; scoring with torch")


def test_a_cached_export_that_disagrees_is_exported_again(cache, capsys):
    """A cached graph that loads but computes something else (here: another LeNet's, as after a
    change to a model's code) is replaced by a new export, silently."""
    from evofool.models import load_model

    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    (file,) = cache.iterdir()
    right = file.read_bytes()
    runtime.export_onnx(load_model("lenet-mnist-b"), evaluator.chunk, file)  # other weights, same name
    assert file.read_bytes() != right
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "onnxruntime" and capsys.readouterr().err == ""
    assert file.read_bytes() == right  # the export is deterministic


def test_an_export_that_still_disagrees_is_torch_or_an_error(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "TOLERANCE", 0.0)
    build_scoring("lenet-mnist", device="cpu")  # exported: disagrees at once
    build_scoring("lenet-mnist", device="cpu")  # cached: disagrees, exported again, disagrees
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and "differ from torch's" in lines[0]
    with pytest.raises(EvofoolError, match="^--runtime onnxruntime: ONNX Runtime's scores of lenet-mnist differ"):
        build_scoring("lenet-mnist", device="cpu", runtime="onnxruntime")


def test_a_model_that_cannot_be_exported_falls_back_with_one_note(monkeypatch, capsys):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 17 is not supported.")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    _, evaluator = build_scoring("lenet-mnist", device="cpu")
    assert evaluator.runtime == "torch"
    assert capsys.readouterr().err.splitlines() == [
        "note: lenet-mnist cannot be exported to ONNX (Exporting the operator 'aten::fancy' to ONNX opset "
        "version 17 is not supported.); scoring with torch"]


def test_onnx_models_are_onnxruntime_whatever_the_runtime(tmp_path, cache):
    import warnings

    from evofool.models import load_model

    path = tmp_path / "lenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(load_model("lenet-mnist").module, (torch.zeros(1, 1, 28, 28),), str(path),
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                          dynamo=False)
    (tmp_path / "lenet.onnx.json").write_text(json.dumps({"input_shape": [1, 28, 28],
                                                          "class_names": [str(i) for i in range(10)]}))
    for choice in runtime.RUNTIMES:
        _, evaluator = build_scoring(f"onnx:{path}", device="cpu", runtime=choice)
        assert evaluator.runtime == "onnxruntime" and evaluator.graph is None  # its own session
    assert not cache.exists()  # nothing exported again
    # And no gradients flow through it: --refine grad is refused in one line.
    from evofool.config import RunConfig
    from evofool.errors import EvofoolError
    from evofool.job import build_engine

    with pytest.raises(EvofoolError, match="--refine grad needs gradients through the model; onnx:.* is scored "
                                           "by ONNX Runtime"):
        build_engine(RunConfig(model=f"onnx:{path}", encoding="cppn", refine="grad", device="cpu"))


def torchscript_file(module: torch.nn.Module, path) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.script(module.eval()).save(str(path))
    path.with_name(path.name + ".json").write_text(json.dumps({"input_shape": [1, 28, 28],
                                                               "class_names": [str(i) for i in range(10)]}))
    return f"torchscript:{path}"


def test_torchscript_models_are_exported_scripted(tmp_path, capsys):
    from evofool.models import load_model

    spec = torchscript_file(load_model("lenet-mnist").module, tmp_path / "lenet.pt")
    _, evaluator = build_scoring(spec, device="cpu")
    assert evaluator.runtime == "onnxruntime" and capsys.readouterr().err == ""
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    _, reference = build_scoring(spec, device="cpu", runtime="torch")
    assert (evaluator.log_probs(x) - reference.log_probs(x)).abs().max() <= runtime.TOLERANCE


class CountingLeNet(torch.nn.Module):
    """LeNet that counts its calls in a buffer: an export would freeze the count."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_a_model_that_changes_its_buffers_stays_on_torch_with_one_note(tmp_path, capsys):
    from evofool.models import load_model

    spec = torchscript_file(CountingLeNet(load_model("lenet-mnist").module), tmp_path / "counting.pt")
    _, evaluator = build_scoring(spec, device="cpu")
    assert evaluator.runtime == "torch"
    assert capsys.readouterr().err.splitlines() == [
        f"note: {spec} changes its own buffers as it scores, which an export would freeze; scoring with torch"]


def test_an_unknown_runtime_is_one_line():
    with pytest.raises(EvofoolError, match="^unknown runtime 'tensorrt'; choose one of auto, torch, onnxruntime$"):
        build_scoring("lenet-mnist", device="cpu", runtime="tensorrt")


# --- threads ----------------------------------------------------------------------------------

def test_threads_zero_means_the_share_this_process_was_given(monkeypatch):
    import os

    assert resolve_threads(3) == 3
    assert resolve_threads(0) == 1  # OMP_NUM_THREADS=1 (the fixture)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads(0) == len(os.sched_getaffinity(0))
    _, evaluator = build_scoring("lenet-mnist", device="cpu", threads=2)
    assert torch.get_num_threads() == 2 and evaluator.graph.session.get_session_options().intra_op_num_threads == 2


# --- runs record what they resolved -----------------------------------------------------------

def test_a_run_records_the_resolved_runtime_and_chunk(tmp_path):
    result = invoke(*run_args(tmp_path / "r", 2))
    assert result.exit_code == 0, result.output
    assert note_lines(result.stderr) == []
    doc = json.loads((tmp_path / "r" / "config.json").read_text())
    assert doc["config"]["runtime"] == "onnxruntime"
    assert doc["scoring_resolved"] == {"runtime": "onnxruntime", "chunk": 100, "precision": "float32"}
    # Not a meaning key: the run's hash is the one the same config had before runtimes.
    assert doc["config_hash"] == RunConfig.from_dict({**doc["config"], "runtime": "torch"}).hash()
    torch_run = invoke(*run_args(tmp_path / "t", 2, "direct", "--runtime", "torch"))
    assert torch_run.exit_code == 0, torch_run.output
    assert json.loads((tmp_path / "t" / "config.json").read_text())["config"]["runtime"] == "torch"


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_resume_of_an_onnxruntime_run_equals_a_straight_run(tmp_path, encoding):
    assert invoke(*run_args(tmp_path / "straight", 6, encoding)).exit_code == 0
    assert invoke(*run_args(tmp_path / "resumed", 3, encoding)).exit_code == 0
    result = invoke("resume", tmp_path / "resumed", "--generations", 6, "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["config"]["runtime"] == "onnxruntime"
    assert_same_result(tmp_path / "straight", tmp_path / "resumed", 6)


def test_a_run_recorded_before_runtimes_resumes_on_torch(tmp_path):
    out = tmp_path / "old"
    assert invoke(*run_args(out, 2)).exit_code == 0
    doc = json.loads((out / "config.json").read_text())
    del doc["config"]["runtime"], doc["config"]["threads"], doc["scoring_resolved"]  # as before this change
    (out / "config.json").write_text(json.dumps(doc))
    assert recorded_runtime(doc["config"]) == "torch"
    job = Job.resume(out, overrides={"generations": 3}, progress=False)
    try:
        assert job.config.runtime == "torch" and job.engine.evaluator.runtime == "torch"
    finally:
        job.close()


def test_a_recorded_onnxruntime_that_is_gone_is_an_error_not_other_bits(monkeypatch, tmp_path):
    out = tmp_path / "r"
    assert invoke(*run_args(out, 2)).exit_code == 0
    no_onnxruntime(monkeypatch)
    one_line_error(invoke("resume", out, "--generations", 3, "--quiet", "--no-gallery"),
                   "--runtime onnxruntime: ONNX Runtime is not installed; use --runtime torch")
    result = invoke("resume", out, "--generations", 3, "--runtime", "torch", "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["config"]["runtime"] == "torch"


# --- Ray workers build the local stack ----------------------------------------------------------

@pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'evofool[ray]')")
@pytest.mark.parametrize("precision, runtime_asked, expected", [
    ("auto", "auto", {"runtime": "onnxruntime", "chunk": 100, "precision": "float32"}),
    ("bfloat16", "auto", {"runtime": "torch", "chunk": 100, "precision": "bfloat16"}),
    ("auto", "torch", {"runtime": "torch", "chunk": 100, "precision": "float32"}),
])
def test_a_ray_worker_builds_the_stack_of_the_local_run(precision, runtime_asked, expected):
    """The actor's code in-process: the run's resolved runtime and its precision (no Ray started)."""
    from evofool.distributed import ScoringWorker, to_wire

    config = RunConfig(population=64, seed=5, device="cpu", precision=precision, runtime=runtime_asked)
    engine, _ = build_engine(config)
    assert engine.evaluator.record() == expected and config.runtime == expected["runtime"]
    worker = ScoringWorker(config.to_dict(), "cpu", 1)
    assert worker.evaluator.record() == expected and worker.ready()["scoring"] == expected
    genomes = engine.ask()
    _, log_probs = engine.score_locally(genomes)
    _, _, worker_log_probs = worker.score(0, to_wire(genomes), False)
    assert np.array_equal(worker_log_probs, log_probs.numpy())


# --- classify and transfer ----------------------------------------------------------------------

def test_classify_takes_a_runtime(tmp_path):
    png = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(png)
    outputs = {}
    for choice in ("torch", "onnxruntime"):
        result = invoke("classify", "--runtime", choice, "--json", "--top", "3", png)
        assert result.exit_code == 0, result.output
        outputs[choice] = json.loads(result.stdout)["top"]
    assert [e["index"] for e in outputs["torch"]] == [e["index"] for e in outputs["onnxruntime"]]
    for a, b in zip(outputs["torch"], outputs["onnxruntime"]):
        assert abs(a["confidence"] - b["confidence"]) < 1e-5


def test_classify_crops_10_rescores_a_crops_10_run_s_champions_to_the_bit(tmp_path):
    """The champions of a --crops 10 run (32x32 images for LeNet's 28x28 crops) score their
    saved confidences again, bit for bit, with classify --crops 10; one crop refuses their size."""
    out = tmp_path / "r"
    result = invoke("run", "--crops", "10", "--population", "20", "--generations", "3", "--out", out,
                    "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    champions = json.loads((out / "champions.json").read_text())["champions"]
    files = [str(out / c["file"]) for c in champions]
    result = invoke("classify", "--crops", "10", "--json", "--top", "10", *files)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [next(e["confidence"] for e in row["top"] if e["index"] == c["class"])
            for row, c in zip(rows, champions)] == [c["confidence"] for c in champions]
    one_line_error(invoke("classify", "--json", *files), "is 32×32 but model lenet-mnist takes 28×28")


def test_classify_rescores_a_run_at_its_runtime_and_chunk_to_the_bit(tmp_path):
    """A run scored by torch one image at a time (other bits than chunks of 100): classify with
    the run's --runtime and --max-batch gives its champions' saved confidences bit for bit."""
    out = tmp_path / "r"
    result = invoke("run", "--runtime", "torch", "--max-batch", "1", "--population", "20", "--generations", "3",
                    "--threads", "1", "--out", out, "--quiet", "--no-gallery")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["scoring_resolved"]["chunk"] == 1
    champions = json.loads((out / "champions.json").read_text())["champions"]
    files = [str(out / c["file"]) for c in champions]
    result = invoke("classify", "--runtime", "torch", "--max-batch", "1", "--json", "--top", "10", *files)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [next(e["confidence"] for e in row["top"] if e["index"] == c["class"])
            for row, c in zip(rows, champions)] == [c["confidence"] for c in champions]


def test_transfer_scores_on_torch_only_where_the_run_did():
    from evofool.experiments.transfer import transfer_runtime

    assert transfer_runtime("torch") == "torch"
    assert transfer_runtime("onnxruntime") == "auto"


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_on_a_cpu_without_it_says_so(monkeypatch, capsys, native):
    """bfloat16 autocast on a CPU that only emulates it gets one note line (whichever CPU
    runs the test: the check is replaced)."""
    from evofool import scoring

    assert isinstance(scoring.native_cpu_bfloat16(), bool)  # this CPU's answer, whatever it is
    monkeypatch.setattr(scoring, "native_cpu_bfloat16", lambda: native)
    _, evaluator = scoring.build_scoring("lenet-mnist", device="cpu", precision="bfloat16", runtime="torch")
    assert evaluator.precision == "bfloat16"
    err = capsys.readouterr().err
    assert ("no native bfloat16" in err) is (not native)
    scoring.build_scoring("lenet-mnist", device="cpu", precision="float32", runtime="torch")
    assert "bfloat16" not in capsys.readouterr().err
