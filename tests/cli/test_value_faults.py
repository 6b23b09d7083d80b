"""Every unchecked value, through the real CLI: one ``error:`` line, exit 2, nothing touched.

Each case is a value that used to end in a traceback, a half-made run folder or a silent
acceptance: from a flag, a ``--param``, a run.toml, a run folder's ``config.json`` (on
resume), a TorchScript or LeNet sidecar, or a population too large for memory. Each runs
``python -m evofool`` in a folder holding every input file; afterwards every file there has
its old bytes and nothing new (no run folder) has appeared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fault_helpers import assert_one_line_error, assert_unchanged, evofool, snapshot

# torch 2.13 deprecates TorchScript; the cases' models are still TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SHIPPED_LENET = Path(__file__).resolve().parents[2] / "evofool" / "models" / "weights" / "lenet-mnist.safetensors"

# run.toml files: name -> text (bytes where the case is bytes that are not UTF-8).
TOMLS: dict[str, str | bytes] = {
    "pop_str": 'population = "abc"\n',
    "gen_str": 'generations = "5"\n',
    "pop_float": "population = 2.5\n",
    "pop_bool": "population = true\n",
    "not_utf8": b'model = "\xff\xfe"\n',
    "syntax": "population = = 3\n",
    "typo": "populaton = 50\n",
    "encoding": 'encoding = "pixels"\n',
    "params_eta": "[encoding_params]\neta = -1.0\n",
    "params_scalar": "encoding_params = 5\n",
    "recombine_bool": "recombine = [true, 2]\n",
    "refine_adapt": 'refine = "grad"\nrefine_adapt = "yes"\n',
}

GOOD_SIDECAR = {"input_shape": [1, 28, 28], "class_names": ["a", "b"]}
# TorchScript sidecars: name -> what replaces keys of the good one (None: the key removed).
SIDECARS: dict[str, dict] = {
    "std_str": {"std": ["a"]},
    "huge_shape": {"input_shape": [3, 100000, 100000]},
    "negative_dim": {"input_shape": [1, -28, 28]},
    "short_shape": {"input_shape": [28, 28]},
    "channels": {"input_shape": [2, 28, 28]},
    "mean_length": {"mean": [0.5, 0.5]},
    "names_not_str": {"class_names": [1, 2]},
    "names_missing": {"class_names": None},
    "unknown_key": {"stdev": [0.5]},
}

# (case id, command line, fragments the error line must contain). Paths are relative to the
# folder holding the inputs (the command's working directory).
CASES = [
    # --- flags -------------------------------------------------------------------------------
    ("weight_steps_direct", ["run", "--weight-steps", "0.5", "--generations", "1"],
     ["--weight-steps steps the weights of CPPN genomes", "direct genomes have none"]),
    ("extrapolate_direct", ["run", "--extrapolate", "on", "--generations", "1"],
     ["--extrapolate continues the weight steps of CPPN genomes", "direct genomes are not networks"]),
    ("extrapolate_bad", ["run", "--encoding", "cppn", "--extrapolate", "0,1"],
     ["extrapolate step lengths must be > 0", "0.0"]),
    ("extrapolate_word", ["run", "--encoding", "cppn", "--extrapolate", "yes"],
     ["extrapolate must be off, on or comma-separated step lengths", "yes"]),
    ("extrapolate_small_population", ["run", "--encoding", "cppn", "--extrapolate", "on", "--population", "8"],
     ["--extrapolate with 3 length(s) needs a population of at least 12", "got 8"]),
    ("extrapolate_no_room", ["run", "--encoding", "cppn", "--extrapolate", "on", "--weight-steps", "0.8",
                             "--population", "100"],
     ["--weight-steps and --extrapolate take 104 of the 100 places", "leave some for mutation"]),
    ("weight_steps_range", ["run", "--encoding", "cppn", "--weight-steps", "1.5"], ["weight-steps must be a finite number in [0, 0.9]", "1.5"]),
    ("refine_units", ["run", "--encoding", "cppn", "--refine", "grad", "--model", "unit:conv2.5:lenet-mnist"],
     ["--refine grad climbs a class's log-probability", "raw unit activations"]),
    ("refine_share_zero", ["run", "--encoding", "cppn", "--refine", "grad", "--refine-share", "0"],
     ["refine-share must be a finite number in (0, 0.9]", "0.0"]),
    ("refine_steps_zero", ["run", "--encoding", "cppn", "--refine", "grad", "--refine-steps", "0"],
     ["refine-steps must be an integer from 1 to 1000", "0"]),
    ("refine_lr_zero", ["run", "--encoding", "cppn", "--refine", "grad", "--refine-lr", "0"],
     ["refine-lr must be a finite number in (0, 10]", "0.0"]),
    ("refine_no_room", ["run", "--encoding", "cppn", "--refine", "grad", "--refine-share", "0.9", "--weight-steps",
                        "0.5", "--population", "10"], ["take 14 of the 10 places", "leave some for mutation"]),
    ("seed_negative", ["run", "--seed", "-1"], ["seed must be an integer from 0 to 18446744073709551615", "-1"]),
    ("seed_2_70", ["run", "--seed", str(2**70)], ["seed must be", str(2**70)]),
    ("population_1e12", ["run", "--population", str(10**12)],
     ["population must be an integer from 1 to 1000000", str(10**12)]),
    ("generations_2_70", ["run", "--generations", str(2**70)], ["generations must be", "fits 64 bits"]),
    ("stop_at_nan", ["run", "--stop-at", "nan"], ["stop-at must be a finite number in (0, 1]", "nan"]),
    ("focus_below_inf", ["run", "--focus-below", "inf"], ["focus-below must be a finite number", "inf"]),
    ("crops_two", ["run", "--crops", "2"], ["crops must be one of 1, 10", "(got 2)"]),
    ("workers_huge", ["run", "--workers", str(10**6)], ["workers must be an integer from 0 to 4096"]),
    ("recombine_nan", ["run", "--recombine", "2,nan"], ["recombine step lengths must be > 0"]),
    # --- encoding parameters -----------------------------------------------------------------
    ("param_eta_abc", ["run", "--param", "eta=abc"], ["encoding direct: eta must be a finite number > 0", "'abc'"]),
    ("param_unknown", ["run", "--param", "etaa=3"],
     ["unknown parameter 'etaa' for encoding direct; valid: eta=15.0, mutation_rate=0.1, halve_every=1000"]),
    ("param_eta_nan", ["run", "--param", "eta=NaN"], ["eta must be a finite number > 0", "nan"]),
    ("param_eta_inf", ["run", "--param", "eta=Infinity"], ["eta must be a finite number > 0", "inf"]),
    ("param_rate_range", ["run", "--param", "mutation_rate=1.5"], ["mutation_rate must be a finite number in [0, 1]"]),
    ("param_int_float", ["run", "--param", "halve_every=2.5"], ["halve_every must be an integer >= 0", "2.5"]),
    ("param_int_bool", ["run", "--param", "halve_every=true"], ["halve_every must be an integer", "True"]),
    ("param_cppn_choice", ["run", "--encoding", "cppn", "--param", "render_dtype=float16"],
     ["encoding cppn: render_dtype must be one of float64, float32"]),
    ("param_squares_order", ["run", "--param", "mutation=squares", "--param", "square_min=0.5", "--param",
                             "square_max=0.1"], ["square_min (0.5) must not exceed square_max (0.1)"]),
    ("param_squares_crossover", ["run", "--param", "mutation=squares", "--param", "crossover_rate=0.5"],
     ["crossover_rate applies to mutation=polynomial"]),
    ("param_periods_order", ["run", "--param", "mutation=lattice", "--param", "period_min=0.5", "--param",
                             "period_max=0.1"], ["period_min (0.5) must not exceed period_max (0.1)"]),
    ("param_lattice_crossover", ["run", "--param", "mutation=lattice", "--param", "crossover_rate=0.5"],
     ["crossover_rate applies to mutation=polynomial (the paper's); add --param mutation=polynomial, or "
      "leave it 0 with mutation=lattice"]),
    ("param_amplitudes_order", ["run", "--param", "mutation=waves", "--param", "amplitude_min=200"],
     ["amplitude_min (200) must not exceed amplitude_max (128)"]),
    ("param_amplitude_range", ["run", "--param", "mutation=rings", "--param", "amplitude_max=300"],
     ["amplitude_max must be a finite number in [0, 255]"]),
    ("param_mutation_choice", ["run", "--param", "mutation=gauss"],
     ["mutation must be one of polynomial, squares, lattice, waves, rings, patterns"]),
    # --- run.toml ----------------------------------------------------------------------------
    ("toml_refine_adapt", ["run", "--config", "refine_adapt.toml"],
     ["refine_adapt.toml: refine_adapt must be one of off, on", "'yes'"]),
    ("toml_pop_str", ["run", "--config", "pop_str.toml"], ["pop_str.toml: population must be an integer", "'abc'"]),
    ("toml_gen_str", ["run", "--config", "gen_str.toml"], ["gen_str.toml: generations must be an integer", "'5'"]),
    ("toml_pop_float", ["run", "--config", "pop_float.toml"], ["pop_float.toml: population must be", "2.5"]),
    ("toml_pop_bool", ["run", "--config", "pop_bool.toml"], ["pop_bool.toml: population must be", "True"]),
    ("toml_not_utf8", ["run", "--config", "not_utf8.toml"], ["not_utf8.toml is not UTF-8 text"]),
    ("toml_syntax", ["run", "--config", "syntax.toml"], ["syntax.toml is not valid TOML"]),
    ("toml_typo", ["run", "--config", "typo.toml"],
     ["typo.toml: unknown config key 'populaton'; valid: ", "population"]),
    ("toml_encoding", ["run", "--config", "encoding.toml"], ["unknown encoding 'pixels'; choose one of: cppn, direct"]),
    ("toml_params_eta", ["run", "--config", "params_eta.toml"], ["encoding direct: eta must be", "-1.0"]),
    ("toml_params_scalar", ["run", "--config", "params_scalar.toml"],
     ["params_scalar.toml: encoding_params must be a table"]),
    ("toml_recombine_bool", ["run", "--config", "recombine_bool.toml"], ["recombine must be auto, off or a list"]),
    ("toml_folder", ["run", "--config", "a_folder"], ["a_folder is not a regular file"]),
    # --- config.json of a run folder, on resume ----------------------------------------------
    ("resume_gen_str", ["resume", "run_gen_str"], ["generations must be an integer", "'abc'"]),
    ("resume_seed_negative", ["resume", "run_seed_negative"], ["seed must be an integer", "-1"]),
    ("resume_unknown_key", ["resume", "run_unknown_key"], ["unknown config key 'colour'; valid: "]),
    # --- sidecars ----------------------------------------------------------------------------
    ("sidecar_std_str", ["run", "--model", "torchscript:std_str.pt"],
     ["std_str.pt.json: std[0] must be a finite number > 0", "'a'"]),
    ("sidecar_huge_shape", ["run", "--model", "torchscript:huge_shape.pt"],
     ["huge_shape.pt.json: input_shape[1] must be an integer from 1 to 4096", "100000"]),
    ("sidecar_negative_dim", ["run", "--model", "torchscript:negative_dim.pt"], ["input_shape[1] must be", "-28"]),
    ("sidecar_short_shape", ["run", "--model", "torchscript:short_shape.pt"],
     ["short_shape.pt.json: input_shape must be a list of 3"]),
    ("sidecar_channels", ["run", "--model", "torchscript:channels.pt"],
     ["input_shape[0] (channels) must be one of 1, 3"]),
    ("sidecar_mean_length", ["run", "--model", "torchscript:mean_length.pt"], ["mean must be a list of 1"]),
    ("sidecar_names_not_str", ["run", "--model", "torchscript:names_not_str.pt"], ["class_names[0] must be a string"]),
    ("sidecar_names_missing", ["run", "--model", "torchscript:names_missing.pt"], ["class_names is missing"]),
    ("sidecar_unknown_key", ["run", "--model", "torchscript:unknown_key.pt"],
     ["unknown_key.pt.json: unknown key 'stdev'; valid: ", "std"]),
    ("lenet_sidecar_names", ["run", "--model", "lenet:lenet.safetensors"],
     ["lenet.json: class_names[0] must be a string"]),
    # --- memory --------------------------------------------------------------------------------
    ("memory", ["run", "--model", "torchscript:big.pt", "--population", "1000000"],
     ["population 1000000 of 3×512×512 images needs about", "use --population"]),
]


def _tiny_model(path: Path, shape: tuple[int, int, int]) -> None:
    """A TorchScript model of two outputs (the first two pixels), for any input of ``shape``."""

    class FirstTwo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :2]

    torch.jit.trace(FirstTwo(), torch.zeros(1, *shape)).save(str(path))


def _damaged_run(world: Path, name: str, good: Path, change) -> None:
    """A copy of the run folder ``good`` whose config.json values ``change`` edits."""
    folder = world / name
    shutil.copytree(good, folder)
    doc = json.loads((folder / "config.json").read_text())
    change(doc["config"])
    (folder / "config.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder holding every input the cases name."""
    root = tmp_path_factory.mktemp("inputs")
    for name, text in TOMLS.items():
        path = root / f"{name}.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (root / "a_folder").mkdir()
    # Sidecars are read before the model: one small model file serves them all.
    _tiny_model(root / "tiny.pt", (1, 28, 28))
    for name, change in SIDECARS.items():
        shutil.copy(root / "tiny.pt", root / f"{name}.pt")
        sidecar = {k: v for k, v in {**GOOD_SIDECAR, **change}.items() if v is not None}
        (root / f"{name}.pt.json").write_text(json.dumps(sidecar))
    _tiny_model(root / "big.pt", (3, 512, 512))
    (root / "big.pt.json").write_text(json.dumps({"input_shape": [3, 512, 512], "class_names": ["a", "b"]}))
    shutil.copy(SHIPPED_LENET, root / "lenet.safetensors")
    (root / "lenet.json").write_text(json.dumps({"class_names": list(range(10))}))
    # One real run folder, then copies with one damaged value each.
    made = evofool("run", "--generations", "1", "--population", "10", "--out", "good_run", "--quiet",
                   "--no-gallery", cwd=root)
    assert made.returncode == 0, made.stderr
    good = root / "good_run"
    _damaged_run(root, "run_gen_str", good, lambda c: c.update(generations="abc"))
    _damaged_run(root, "run_seed_negative", good, lambda c: c.update(seed=-1))
    _damaged_run(root, "run_unknown_key", good, lambda c: c.update(colour=1))
    return root


def _all_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_cases_cover_at_least_thirty_values():
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_value_is_one_line_error_and_touches_nothing(world, args, fragments):
    before, paths = snapshot(world), _all_paths(world)
    # Short-run options first: a case's own option, given after, wins where both name one.
    extra = ["--out", "new_run", "--generations", "1", "--quiet", "--no-gallery"] if args[0] == "run" else ["--quiet"]
    proc = evofool(args[0], *extra, *args[1:], cwd=world)
    assert_one_line_error(proc, *fragments)
    assert_unchanged(before, world)
    assert _all_paths(world) == paths, sorted(_all_paths(world) - paths)  # no run folder, no stray file
