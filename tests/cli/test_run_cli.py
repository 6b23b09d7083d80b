"""`evofool run` end to end, through the real CLI, on the shipped LeNet."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from evofool import checkpoint
from evofool.cli import cli
from fault_helpers import one_line_error
from resume_helpers import assert_same_result


def run_cli(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_run_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "r"
    result = run_cli("run", "--generations", "12", "--population", "50", "--seed", "3", "--out", str(out),
                     "--quiet", "--no-gallery", "--checkpoint-every", "5")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["population"] == 50 and doc["class_names"] == [str(i) for i in range(10)]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in log] == list(range(1, 13))
    assert log[-1]["evaluations"] == 600
    assert all(r["min"] <= r["median"] <= r["max"] <= 1 for r in log)
    # Champion confidence never decreases: the archive only accepts improvements.
    assert all(b["min"] >= a["min"] - 1e-12 for a, b in zip(log, log[1:]))
    champs = json.loads((out / "champions.json").read_text())["champions"]
    assert len(champs) == 10 and all((out / c["file"]).is_file() for c in champs)
    assert (out / "checkpoint.safetensors").is_file() and (out / "checkpoint.prev.safetensors").is_file()
    assert "classes ≥ 99.99 %" in result.stdout


def test_same_seed_gives_identical_archive(tmp_path):
    for name in ("a", "b"):
        assert run_cli("run", "--generations", "8", "--population", "40", "--seed", "11",
                       "--out", str(tmp_path / name), "--quiet", "--no-gallery").exit_code == 0
    _, a, _ = checkpoint.load(tmp_path / "a")
    _, b, _ = checkpoint.load(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    _, c, _ = checkpoint.load(tmp_path / "a")
    assert run_cli("run", "--generations", "8", "--population", "40", "--seed", "12",
                   "--out", str(tmp_path / "c"), "--quiet", "--no-gallery").exit_code == 0
    _, c, _ = checkpoint.load(tmp_path / "c")
    assert not np.array_equal(a["archive.images"], c["archive.images"])


@pytest.mark.parametrize("encoding, lr, adapt", [("cppn", 0.01, "off"), ("direct", 0.01, "off"),
                                                 ("direct", 0.4, "on")])
def test_refine_grad_runs_are_recorded_as_hybrid_and_exact_across_threads_and_resume(tmp_path, encoding, lr, adapt):
    """--refine grad: gradient steps on one torch thread, so --threads 1 and 2 and a stopped
    and resumed run give the same archive; the config says it is not black-box, and each
    gradient step counts as 3 evaluations; the learning rate is the encoding's own. With
    --refine-adapt on (and an lr so coarse that children fail), the per-class steps shrink
    and are checkpointed, so a resume is exact too."""
    common = ["--model", "lenet-mnist", "--encoding", encoding, "--population", "40", "--seed", "2", "--refine",
              "grad", "--refine-share", "0.25", "--refine-steps", "2", "--refine-adapt", adapt,
              "--quiet", "--no-gallery"] + (["--refine-lr", str(lr)] if adapt == "on" else [])
    for name, threads in (("one", "1"), ("two", "2")):
        result = run_cli("run", *common, "--generations", "6", "--threads", threads, "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    assert run_cli("run", *common, "--generations", "3", "--out", str(tmp_path / "stopped")).exit_code == 0
    assert run_cli("resume", str(tmp_path / "stopped"), "--generations", "6", "--quiet", "--no-gallery").exit_code == 0
    _, one, _ = checkpoint.load(tmp_path / "one")
    for other in ("two", "stopped"):
        _, arrays, _ = checkpoint.load(tmp_path / other)
        for key in one:
            np.testing.assert_array_equal(one[key], arrays[key], err_msg=f"{other}: {key}")
    doc = json.loads((tmp_path / "one" / "config.json").read_text())
    refine = doc["emitters_resolved"][-1]
    assert refine["type"] == "gradient_refine" and refine["black_box"] is False and refine["size"] == 10
    assert refine["lr"] == lr and doc["config"]["refine_lr"] == lr
    assert doc["config"]["refine_adapt"] == adapt and ("adapt" in refine) == (adapt == "on")
    if adapt == "on":
        scales = one["emitters.2.lr_scale"]  # mutation, step recombination, then gradient_refine
        assert scales.shape == (10,) and scales.max() <= 1.0 and scales.min() < 1.0
    log = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    assert [r["evaluations"] for r in log] == [40 + g * (40 + 3 * 2 * 10) for g in range(6)]


@pytest.mark.parametrize("links", ["output", "dense"])
def test_refine_balance_runs_record_it_vary_their_share_and_resume_exactly(tmp_path, links):
    """--refine-balance on: the refined share moves from generation to generation (so does
    each generation's evaluation count); a stopped and resumed run gives the same archive and
    log, the share included; the config records the rule. With refine_links=dense too: the
    read-out links it adds take ids from the link counter, which the checkpoint keeps."""
    common = ["--model", "lenet-mnist", "--encoding", "cppn", "--population", "30", "--seed", "4", "--refine", "grad",
              "--param", f"refine_links={links}",
              "--refine-share", "0.2", "--refine-steps", "1", "--refine-balance", "on", "--quiet", "--no-gallery"]
    assert run_cli("run", *common, "--generations", "8", "--out", str(tmp_path / "straight")).exit_code == 0
    assert run_cli("run", *common, "--generations", "4", "--out", str(tmp_path / "stopped")).exit_code == 0
    assert run_cli("resume", str(tmp_path / "stopped"), "--generations", "8", "--quiet", "--no-gallery").exit_code == 0
    state, straight, _ = checkpoint.load(tmp_path / "straight")
    resumed_state, resumed, _ = checkpoint.load(tmp_path / "stopped")
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    assert state["engine"]["emitters"] == resumed_state["engine"]["emitters"]
    logs = [[json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("straight", "stopped")]
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "evals_per_s")} for r in logs[0]]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "evals_per_s")} for r in logs[1]]
    spent = np.diff([0] + [r["evaluations"] for r in logs[0]])
    assert spent[0] == 30 and len(set(spent[1:].tolist())) > 1  # 30 rows + 3 per refined row, which varies
    doc = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert doc["config"]["encoding_params"]["refine_links"] == links
    assert doc["config"]["refine_balance"] == "on" and doc["emitters_resolved"][-1]["balance"]["population"] == 30
    bad = run_cli("run", *common[:-4], "--refine-balance", "maybe", "--out", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "maybe" in bad.output


@pytest.mark.parametrize("kind", ["uniform", "line"])
def test_cppn_crossover_runs_record_it_and_resume_exactly(tmp_path, kind):
    """--param crossover_rate: a CPPN run crosses parents before mutating them (other
    children than without), records the parameters, and a stopped and resumed run gives
    the same archive and log (crossover draws from the run's one generator)."""
    common = ["--model", "lenet-mnist", "--encoding", "cppn", "--population", "30", "--seed", "6", "--quiet",
              "--no-gallery", "--selection", "curiosity"]
    crossing = [*common, "--param", "crossover_rate=0.5", "--param", f"crossover={kind}"]
    assert run_cli("run", *crossing, "--generations", "8", "--out", str(tmp_path / "straight")).exit_code == 0
    assert run_cli("run", *crossing, "--generations", "4", "--out", str(tmp_path / "stopped")).exit_code == 0
    assert run_cli("resume", str(tmp_path / "stopped"), "--generations", "8", "--quiet", "--no-gallery").exit_code == 0
    assert run_cli("run", *common, "--generations", "8", "--out", str(tmp_path / "plain")).exit_code == 0
    state, straight, _ = checkpoint.load(tmp_path / "straight")
    resumed_state, resumed, _ = checkpoint.load(tmp_path / "stopped")
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    assert state["engine"] == resumed_state["engine"]
    logs = [[{k: v for k, v in json.loads(line).items() if k not in ("seconds", "evals_per_s")}
             for line in (tmp_path / name / "log.jsonl").read_text().splitlines()] for name in ("straight", "stopped")]
    assert logs[0] == logs[1]
    _, plain, _ = checkpoint.load(tmp_path / "plain")
    assert not np.array_equal(plain["genomes.link_weight"], straight["genomes.link_weight"])
    doc = json.loads((tmp_path / "straight" / "config.json").read_text())
    recorded = doc["config"]["encoding_params"]
    assert recorded["crossover_rate"] == 0.5 and recorded["crossover"] == kind


def test_extrapolate_runs_record_it_propose_and_resume_exactly_with_proposals_waiting(tmp_path):
    """--extrapolate on: the run records the setting and the emitter, its checkpoint holds the
    proposals waiting for the next generation, and a stopped and resumed run gives the same
    archive and log as a straight one."""
    common = ["--model", "lenet-mnist", "--encoding", "cppn", "--population", "30", "--seed", "2", "--quiet",
              "--no-gallery", "--extrapolate", "on", "--param", "p_weights_only=1",
              "--param", "weights_only_p_weight=0.3"]
    assert run_cli("run", *common, "--generations", "10", "--out", str(tmp_path / "straight")).exit_code == 0
    assert run_cli("run", *common, "--generations", "2", "--out", str(tmp_path / "stopped")).exit_code == 0
    state, stopped, _ = checkpoint.load(tmp_path / "stopped")
    for generation in range(3, 10):  # on, a generation at a time, to a checkpoint with proposals waiting
        if state["engine"]["emitters"][1]["state"]["pending"]:
            break
        assert run_cli("resume", str(tmp_path / "stopped"), "--generations", str(generation), "--quiet",
                       "--no-gallery").exit_code == 0
        state, stopped, _ = checkpoint.load(tmp_path / "stopped")
    waiting = state["engine"]["emitters"][1]
    assert waiting["type"] == "extrapolation"
    assert waiting["state"]["pending"] > 0 and len(stopped["emitters.1.classes"]) == waiting["state"]["pending"]
    assert run_cli("resume", str(tmp_path / "stopped"), "--generations", "10", "--quiet", "--no-gallery").exit_code == 0
    assert_same_result(tmp_path / "straight", tmp_path / "stopped", 10)
    doc = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert doc["config"]["extrapolate"] == "on"
    assert doc["emitters_resolved"][1] == {"type": "extrapolation", "lengths": [0.5, 1.0, 2.0], "max_share": 0.25,
                                          "focus_below": 0.9999}


def test_direct_encoding_fools_lenet_on_all_ten_classes(tmp_path):
    """The paper's first result, with the defaults: every digit at >= 99.99 % within 200 generations."""
    out = tmp_path / "full"
    result = run_cli("run", "--seed", "0", "--out", str(out), "--quiet", "--no-gallery",
                     "--stop-at", "0.9999")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n9999"] == 10
    assert summary["all_9999_at"] is not None and summary["all_9999_at"] <= 200
    assert f"at generation {summary['all_9999_at']}" in result.stdout


def test_config_toml_and_command_line_override(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('population = 30\ngenerations = 3\nseed = 4\n[encoding_params]\nmutation = "polynomial"\n'
                    'eta = 20.0\n')
    out = tmp_path / "t"
    assert run_cli("run", "--config", str(toml), "--generations", "2", "--out", str(out),
                   "--quiet", "--no-gallery").exit_code == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["population"], cfg["generations"], cfg["seed"]) == (30, 2, 4)
    # the parameters whose default changed after runs were recorded are recorded explicitly
    assert cfg["encoding_params"] == {"eta": 20.0, "mutation": "polynomial", "init": "flat"}


@pytest.mark.parametrize("args, fragment", [
    (["--encoding", "pixels"], "'pixels' is not one of 'cppn', 'direct'"),
    (["--population", "0"], "population"),
    (["--generations", "-1"], "generations"),
    (["--model", "no-such-model"], "unknown model"),
    (["--param", "etaa=3"], "unknown parameter 'etaa' for encoding direct; valid: eta=15.0"),
    (["--param", "eta"], "NAME=VALUE"),
    (["--recombine", "2,x"], "recombine"),
    (["--recombine", "0"], "must be > 0"),
    (["--encoding", "cppn", "--recombine", "2,4"], "vector genomes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    result = run_cli("run", "--out", str(tmp_path / "x"), "--quiet", "--generations", "1", *args)
    one_line_error(result, fragment)


def test_out_folder_holding_another_run_is_never_overwritten(tmp_path):
    out = tmp_path / "r"
    assert run_cli("run", "--generations", "2", "--population", "10", "--out", str(out),
                   "--quiet", "--no-gallery").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run_cli("run", "--generations", "2", "--population", "10", "--seed", "9", "--out", str(out), "--quiet")
    one_line_error(result, "already holds a run", "evofool resume")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "mine.txt").write_text("keep")
    one_line_error(run_cli("run", "--out", str(stray), "--quiet"), "not empty")


def test_python_dash_m_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evofool", "run", "--population", "0", "--out",
                           str(tmp_path / "p")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


def test_refine_options_without_refine_grad_are_named_as_ignored(tmp_path):
    """--refine-lr and friends compute nothing in a black-box run: the run goes on (exit 0)
    and says so in one line, naming them, whether typed or in run.toml; with --refine grad
    there is no such line."""
    toml = tmp_path / "run.toml"
    toml.write_text("refine-steps = 2\n")
    args = ["--generations", "1", "--population", "20", "--quiet", "--no-gallery"]
    result = run_cli("run", *args, "--refine-lr", "0.5", "--refine-balance", "on", "--config", str(toml),
                     "--out", str(tmp_path / "a"))
    assert result.exit_code == 0
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notes == ["note: ignored without --refine grad: --refine-steps, --refine-lr, --refine-balance"]
    plain = run_cli("run", *args, "--out", str(tmp_path / "b"))
    hybrid = run_cli("run", *args, "--refine", "grad", "--refine-lr", "0.5", "--out", str(tmp_path / "c"))
    assert plain.exit_code == hybrid.exit_code == 0
    assert "ignored without --refine grad" not in plain.output + hybrid.output
    # The encoding's refine-only parameters too, from --param or run.toml's encoding_params.
    toml.write_text("[encoding_params]\nrefine_links = \"dense\"\n")
    cppn = run_cli("run", *args, "--encoding", "cppn", "--refine-lr", "0.5", "--config", str(toml),
                   "--out", str(tmp_path / "d"))
    typed = run_cli("run", *args, "--encoding", "cppn", "--param", "refine_links=all", "--out", str(tmp_path / "e"))
    dense = run_cli("run", *args, "--encoding", "cppn", "--refine", "grad", "--param", "refine_links=dense",
                    "--out", str(tmp_path / "f"))
    assert cppn.exit_code == typed.exit_code == dense.exit_code == 0
    assert [line for line in cppn.output.splitlines() if line.startswith("note:")] == [
        "note: ignored without --refine grad: --refine-lr, --param refine_links"]
    assert [line for line in typed.output.splitlines() if line.startswith("note:")] == [
        "note: ignored without --refine grad: --param refine_links"]
    assert "ignored without --refine grad" not in dense.output


def test_ctrl_c_outside_a_run_s_generations_is_one_line_and_130(tmp_path, monkeypatch):
    """Ctrl-C while a command loads or exports (not inside a run's generations, which stop
    at a checkpoint): one line and the shell's 130, not click's "Aborted!" and exit 1."""
    import evofool.gallery

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evofool.gallery, "export_gallery", interrupted)
    result = run_cli("export", str(tmp_path))
    assert result.exit_code == 130
    assert result.output.strip() == "error: interrupted (Ctrl-C); files written before are intact"


def test_ctrl_c_that_surfaces_as_another_error_is_still_one_line_and_130(tmp_path):
    """A real SIGINT whose KeyboardInterrupt a library turns into another error (numpy's lazy
    import under matplotlib gave an AttributeError): the interruption's line and 130, no traceback."""
    script = tmp_path / "cmd.py"
    script.write_text(
        "import os, signal, sys\n"
        "import click\n"
        "from evofool.cli import cli, main\n"
        "@cli.command('boom')\n"
        "def boom():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    except KeyboardInterrupt:\n"
        "        raise AttributeError(\"module 'numpy' has no attribute 'ma'\")\n"
        "main(['boom'])\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "error: interrupted (Ctrl-C); files written before are intact\n"


def test_ctrl_c_after_the_command_ended_ends_the_process_without_a_traceback(tmp_path):
    """Ctrl-C during the interpreter's shutdown, after the command printed its result: that
    output kept, no traceback, 130."""
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, os, signal, sys, time\n"
        "sys.argv = ['evofool', 'models']\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)))\n"
        "from evofool.__main__ import entry\n"
        "entry()\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "", proc.stderr
    assert "default: lenet-mnist" in proc.stdout


def test_ctrl_c_while_the_cli_imports_is_one_line_and_130(monkeypatch, capsys):
    """The console script imports the CLI (and torch) before anything runs: Ctrl-C then was a
    traceback from inside torch."""
    import types

    from evofool.__main__ import entry

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "evofool.cli", Importing("evofool.cli"))
    with pytest.raises(SystemExit) as info:
        entry()
    assert info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted (Ctrl-C) before the command started; nothing was written\n"


def test_refine_grad_on_the_default_direct_mutation_suggests_the_papers(tmp_path):
    """The gradient hybrid climbed faster from polynomial steps on noise: a direct run given
    --refine grad without a mutation says so in one note line and goes on; one that names
    its mutation, or a CPPN run, gets no such line."""
    args = ["--refine", "grad", "--generations", "1", "--population", "20", "--quiet", "--no-gallery"]
    notes = {}
    for name, extra in (("default", []), ("named", ["--param", "mutation=polynomial"]),
                        ("cppn", ["--encoding", "cppn"])):
        result = run_cli("run", *args, *extra, "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        notes[name] = [line for line in result.stderr.splitlines() if "--refine grad on the direct" in line]
    assert notes["default"] == [
        "note: --refine grad on the direct encoding climbed faster with the paper's mutation from noise "
        "(add --param mutation=polynomial --param init=noise; see README)"]
    assert notes["named"] == notes["cppn"] == []
