"""``Job``: a run bound to its folder — its summary, hooks, lock, resume messages and progress bar.

(Interrupting and resuming a run, signals and damaged checkpoints: tests/test_resume.py.)
"""

from __future__ import annotations

import json

import pytest

from evofool import safefs
from evofool.config import RunConfig
from evofool.devices import resolve_device
from evofool.errors import EvofoolError
from evofool import job as job_module
from evofool.job import Job

pytestmark = pytest.mark.usefixtures("one_thread")


def small_run(tmp_path, name: str = "run", **config) -> tuple[RunConfig, object]:
    values = {"generations": 4, "population": 20, "seed": 1, "checkpoint_every": 2, **config}
    return RunConfig(**values), tmp_path / name


def test_summary_of_a_probability_run_matches_its_champions(tmp_path):
    config, out = small_run(tmp_path)
    job = Job.start(config, out, progress=False)
    assert job.run() == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary == job.summary()
    champions = json.loads((out / "champions.json").read_text())
    assert champions["fitness_kind"] == "log_prob"
    confidences = sorted(c["confidence"] for c in champions["champions"])
    assert summary["fitness_kind"] == "log_prob" and summary["generation"] == 4 and summary["classes"] == 10
    assert summary["median_confidence"] == pytest.approx((confidences[4] + confidences[5]) / 2)
    assert summary["n99"] == sum(c >= 0.99 for c in confidences) and "median_activation" not in summary
    line = job.result_line()
    assert line.startswith(f"{summary['n9999']}/10 classes ≥ 99.99 %, {summary['n99']}/10 ≥ 99 %, median ")
    assert line.endswith(f"after 4 generations; run folder: {out}")


def test_hooks_receive_the_job_after_each_checkpoint(tmp_path):
    config, out = small_run(tmp_path)
    seen = []
    job = Job.start(config, out, progress=False, hooks=[lambda j: seen.append((j, j.engine.generation))])
    assert job.run() == 0
    assert seen == [(job, 2), (job, 4)]  # not the generation-0 checkpoint Job.start writes


def test_the_folder_is_unlocked_after_a_run_and_after_a_failing_one(tmp_path):
    config, out = small_run(tmp_path)
    job = Job.start(config, out, progress=False)
    with pytest.raises(EvofoolError, match="in use by process"):
        safefs.lock_folder(out)  # held while the job exists
    assert job.run() == 0
    safefs.lock_folder(out).release()

    def failing(job) -> None:
        raise EvofoolError("the hook failed")

    config, out = small_run(tmp_path, "failing")
    job = Job.start(config, out, progress=False, hooks=[failing])
    with pytest.raises(EvofoolError, match="the hook failed"):
        job.run()
    safefs.lock_folder(out).release()


def test_a_run_whose_folder_was_removed_or_replaced_writes_nothing_more(tmp_path):
    """Files are written by path: a run whose folder was moved away (or deleted) and replaced by
    another run's at the same path must not write into the new one, whose own writer holds its
    lock; it stops at its next checkpoint with one line."""
    import shutil

    config, out = small_run(tmp_path)
    first = Job.start(config, out, progress=False)
    (out).rename(tmp_path / "moved")
    second = Job.start(config, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(EvofoolError, match=f"run folder {out} was removed or replaced while this process held it"):
        first.save()
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert second.run() == 0  # the new folder's own writer is unaffected
    first.close()

    config, out = small_run(tmp_path, "deleted")  # deleted at its first checkpoint (generation 2 of 4)
    job = Job.start(config, out, progress=False, hooks=[lambda j: shutil.rmtree(out)])
    with pytest.raises(EvofoolError, match="was removed or replaced"):
        job.run()
    assert job.engine.generation == 4 and not out.exists()
    config, out = small_run(tmp_path, "gone")  # removed before it ran at all
    job = Job.start(config, out, progress=False)
    shutil.rmtree(out)
    with pytest.raises(EvofoolError, match="was removed or replaced"):
        job.run()
    assert not out.exists()


def test_resume_says_where_it_continues_and_when_there_is_nothing_to_do(tmp_path, capsys):
    config, out = small_run(tmp_path)
    assert Job.start(config, out, progress=False).run() == 0
    capsys.readouterr()
    assert Job.resume(out, overrides={"generations": 6}, progress=True).run() == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "resuming at generation 4 of 6"
    assert "6/6" in err  # the progress bar went on from there

    assert Job.resume(out, progress=True).run() == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nothing to do: {out} is at generation 6 of 6"), lines
    assert "--generations N" in lines[0]


def test_a_unit_run_shows_activations_in_its_progress_bar_and_result(tmp_path, capsys):
    config, out = small_run(tmp_path, model="unit:conv2.5:lenet-mnist")
    job = Job.start(config, out, progress=True)
    assert job.run() == 0
    err = capsys.readouterr().err
    assert "best activation " in err and "≥99.99%" not in err
    summary = job.summary()
    assert summary["fitness_kind"] == "score" and summary["n9999"] is None
    line = job.result_line()
    assert line.startswith("1 units: median activation ") and "%" not in line


def test_build_engine_resolves_devices_with_evofool_devices():
    assert job_module.resolve_device is resolve_device
    assert not hasattr(job_module, "_resolve_device")  # the old private alias is gone


def test_balanced_refinement_leaves_extrapolation_proposals_their_places():
    """With --refine-balance on, the refined share moves up to all but one place of what the
    fixed emitters leave: the most the extrapolation proposals take is not part of it, so a
    batch never needs more places than the population holds."""
    import numpy as np

    from evofool.emitters import ExtrapolationEmitter, GradientRefineEmitter, extrapolation_places
    from evofool.job import build_engine

    config = RunConfig(model="lenet-mnist", encoding="cppn", population=20, refine="grad", refine_balance="on",
                       extrapolate="on", runtime="torch", threads=1)
    engine, _ = build_engine(config)
    refine = next(e for e in engine.emitters if isinstance(e, GradientRefineEmitter))
    extrapolation = next(e for e in engine.emitters if isinstance(e, ExtrapolationEmitter))
    most = extrapolation_places(20, 3)
    assert most == 3 and refine.population == 20 - most
    refine.share = 1.0  # as high as the balance can ever push it
    extrapolation.pending = engine.encoding.random(most, np.random.default_rng(0))
    assert sum(engine.shares()) == 20 and engine.shares()[0] >= 1
