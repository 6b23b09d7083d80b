"""Distributed evaluation on Ray: same archive as the local evaluator, dead workers, resume.

One local Ray instance (2 CPUs) is shared by the module and shut down at its end. Runs
are small; each Ray run still pays for two worker processes importing torch.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evofool import checkpoint
from evofool.cli import cli
from evofool.config import RunConfig
from evofool.engine import TIMING_KEYS
from evofool.job import Job

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LENET = REPO_ROOT / "evofool" / "models" / "weights" / "lenet-mnist.safetensors"
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'evofool[ray]')")

POP, GENS, SEED = 64, 8, 5  # 64 = two sub-batches of 32 (distributed.MIN_SUB_BATCH)


@pytest.fixture(scope="module", autouse=True)
def export_cache(tmp_path_factory):
    """The module's own ONNX export cache (never the user's ~/.cache), set before Ray starts:
    workers inherit the environment."""
    from evofool.runtime import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The shipped ``lenet-mnist`` if its weights exist, else a seeded random-init LeNet."""
    if SHIPPED_LENET.is_file():
        return "lenet-mnist"
    import torch

    from evofool.models.lenet import LeNet, save_lenet

    path = tmp_path_factory.mktemp("model") / "rand-lenet.safetensors"
    state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    save_lenet(LeNet(), path)
    torch.random.set_rng_state(state)
    return f"lenet:{path}"


@pytest.fixture(scope="module")
def ray_cluster():
    """One private local Ray instance (2 CPUs) for the whole module."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed (pip install 'evofool[ray]')")
    import ray

    from evofool.distributed import connect

    # Workers inherit the environment: make this checkout importable there too.
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), old_path]))
    started = connect("local", RunConfig(workers=2))
    yield ray
    if started:
        ray.shutdown()
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


def config(model: str, *, generations: int = GENS, ray: str | None = None, encoding: str = "direct",
           every: int = 4) -> RunConfig:
    return RunConfig(model=model, encoding=encoding, population=POP, generations=generations, seed=SEED,
                     checkpoint_every=every, ray=ray, workers=2 if ray else 0, device="cpu").validate()


def run_job(job: Job) -> Job:
    try:
        assert job.run() == 0
    finally:
        close = getattr(job.engine.score, "close", None)
        if close is not None:  # frees the 2 CPUs for the next test's workers
            close()
    return job


def assert_same_run(a: Path, b: Path) -> None:
    """Checkpoint arrays bit-for-bit equal; log records equal except timings."""
    state_a, arrays_a, _ = checkpoint.load(a)
    state_b, arrays_b, _ = checkpoint.load(b)
    assert state_a["engine"] == state_b["engine"]
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)

    def records(folder: Path) -> list[dict]:
        lines = (folder / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]

    assert records(a) == records(b)


@pytest.fixture(scope="module")
def local_runs(model, tmp_path_factory) -> dict[str, Path]:
    """Reference runs with the local evaluator: GENS//2 generations and GENS generations."""
    root = tmp_path_factory.mktemp("local")
    half = run_job(Job.start(config(model, generations=GENS // 2), root / "half", progress=False))
    full = run_job(Job.start(config(model), root / "full", progress=False))
    return {"half": half.folder.path, "full": full.folder.path}


# --- without Ray -------------------------------------------------------------------------

def test_without_ray_the_cli_says_how_to_install(monkeypatch, model, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    monkeypatch.delitem(sys.modules, "evofool.distributed", raising=False)
    result = CliRunner().invoke(cli, ["run", "--model", model, "--generations", "2", "--population", "8",
                                      "--out", str(tmp_path / "r"), "--ray", "auto", "--quiet",
                                      "--no-gallery"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --ray needs Ray: install it with pip install 'evofool[ray]'")
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


# --- pieces that need Ray importable but no cluster ------------------------------------------

def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ray
@pytest.mark.parametrize("address, fragment", [
    ("1.2.3.4:99999", "is not a cluster address: give HOST:PORT (port 1-65535)"),
    ("nohost", "is not a cluster address"),
    ("ray://:10001", "is not a cluster address"),
    (None, "nothing answers at 127.0.0.1:"),
])
def test_a_cluster_address_that_cannot_answer_is_one_line_at_once(model, tmp_path, address, fragment):
    """A malformed address, or one where nothing listens: one line within the probe's 5 s, no
    run folder (ray.init used to retry such an address for minutes)."""
    address = address or f"127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(cli, ["run", "--model", model, "--generations", "1", "--population", "8",
                                      "--out", str(tmp_path / "r"), "--ray", address, "--quiet", "--no-gallery"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


@needs_ray
def test_worker_plan_sizes_actors_to_fit():
    from evofool.distributed import plan_workers

    def node(cpu, gpu=0.0, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpu, **({"GPU": gpu} if gpu else {})}}

    plan = plan_workers(RunConfig(workers=0), [node(2)])
    assert (plan.count, plan.num_cpus, plan.threads, plan.device) == (2, 1, 1, "cpu")
    # Equal CPU shares, capped by the smallest node so that every actor fits somewhere.
    plan = plan_workers(RunConfig(workers=2), [node(8), node(32)])
    assert (plan.count, plan.num_cpus) == (2, 8)
    assert plan_workers(RunConfig(workers=2), [node(16), node(16), node(4, alive=False)]).num_cpus == 16
    # One actor per GPU by default; 1/k GPU each when more workers than GPUs.
    plan = plan_workers(RunConfig(workers=0), [node(16, gpu=4)])
    assert (plan.count, plan.num_gpus, plan.device) == (4, 1.0, "cuda")
    assert plan_workers(RunConfig(workers=6), [node(16, gpu=4)]).num_gpus == 0.5
    assert plan_workers(RunConfig(workers=0, device="cpu"), [node(16, gpu=4)]).device == "cpu"


@needs_ray
def test_scoring_worker_matches_the_local_evaluator(model):
    """The actor's code, run in-process: same images and log-probs, genome wire format included."""
    import torch

    from evofool.distributed import ScoringWorker, from_wire, to_wire
    from evofool.job import build_engine

    cfg = config(model)
    engine, _ = build_engine(cfg)
    genomes = engine.ask()
    images, log_probs = engine.score_locally(genomes)
    threads = torch.get_num_threads()
    try:
        worker = ScoringWorker(cfg.to_dict(), "cpu", 1)  # sets this process's torch threads to 1
    finally:
        torch.set_num_threads(threads)
    for send_images in (True, False):
        tag, w_images, w_log_probs = worker.score(7, to_wire(genomes), send_images)
        assert tag == 7 and w_log_probs.dtype == np.float64
        assert torch.equal(torch.from_numpy(w_log_probs), log_probs)
        assert (w_images is None) != send_images
        if send_images:
            assert torch.equal(torch.from_numpy(w_images), images)
    assert torch.equal(from_wire(to_wire(genomes), torch.device("cpu")), genomes)


# --- on a local Ray instance -----------------------------------------------------------------

@needs_ray
def test_ray_run_equals_local_run_and_resumes_without_ray(ray_cluster, model, local_runs, tmp_path):
    out = tmp_path / "ray"
    result = CliRunner().invoke(cli, ["run", "--model", model, "--population", str(POP), "--seed", str(SEED),
                                      "--generations", str(GENS // 2), "--checkpoint-every", "4",
                                      "--device", "cpu", "--out", str(out), "--ray", "auto", "--workers", "2",
                                      "--quiet", "--no-gallery"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    # The CLI's evaluator is only reachable through the result's traceback frames: drop
    # them so its actors (and their CPUs) are released before the next run needs them.
    del result
    gc.collect()
    assert_same_run(out, local_runs["half"])
    # The checkpoint of a Ray run is an ordinary checkpoint: finish it in this process.
    run_job(Job.resume(out, overrides={"generations": GENS, "ray": None}, progress=False))
    assert_same_run(out, local_runs["full"])


@needs_ray
def test_local_run_resumes_on_ray(ray_cluster, model, local_runs, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(local_runs["half"], out)
    job = Job.resume(out, overrides={"generations": GENS, "ray": "auto", "workers": 2}, progress=False)
    assert type(job.engine.score).__name__ == "RayEvaluator"
    run_job(job)
    assert_same_run(out, local_runs["full"])


@needs_ray
def test_killed_workers_are_replaced_and_the_run_is_unchanged(ray_cluster, model, local_runs, tmp_path,
                                                              capsys):
    ray = ray_cluster
    job = Job.start(config(model, ray="auto", every=2), tmp_path / "killed", progress=False)
    evaluator = job.engine.score

    def kill(folder) -> None:
        # After generation 2: ray.kill; after generation 4: the process dies of SIGKILL (a crash).
        if job.engine.generation == 2:
            ray.kill(evaluator.workers[0])
        elif job.engine.generation == 4:
            os.kill(ray.get(evaluator.workers[-1].ready.remote())["pid"], signal.SIGKILL)

    job.hooks.append(kill)
    run_job(job)
    assert evaluator.restarts == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("resubmitting its sub-batch" in w for w in warnings), warnings
    assert_same_run(job.folder.path, local_runs["full"])


@needs_ray
def test_workers_that_cannot_load_the_model_fail_in_one_line(ray_cluster, model, tmp_path):
    from evofool.distributed import RayEvaluator, WorkerPlan
    from evofool.encodings import make_encoding
    from evofool.errors import EvofoolError

    one = WorkerPlan(count=1, num_cpus=1, num_gpus=0, threads=1)
    encoding = make_encoding("direct", (1, 28, 28))
    missing = config(f"lenet:{tmp_path / 'missing.safetensors'}", ray="auto")
    with pytest.raises(EvofoolError, match="a Ray worker could not start: ") as err:
        RayEvaluator(missing, encoding, one)
    assert "missing.safetensors" in str(err.value) and "\n" not in str(err.value)
    # Same spec, other weights on the worker's side: refused, not silently used.
    with pytest.raises(EvofoolError, match="loaded another model"):
        RayEvaluator(config(model, ray="auto"), encoding, one, fingerprint="0" * 16)


@needs_ray
def test_cppn_ray_run_equals_local_run(ray_cluster, model, tmp_path):
    gens = 3
    local = run_job(Job.start(config(model, encoding="cppn", generations=gens), tmp_path / "local",
                              progress=False))
    remote = run_job(Job.start(config(model, encoding="cppn", generations=gens, ray="auto"),
                               tmp_path / "ray", progress=False))
    assert_same_run(remote.folder.path, local.folder.path)
