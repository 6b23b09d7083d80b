"""Each encoding's ``PARAMS`` table: the one declaration of its parameters' defaults and checks."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evofool.cli import cli
from evofool.config import ConfigError, Param, RunConfig
from evofool.encodings import ENCODINGS, check_params, describe_params, encoding_class, make_encoding
from evofool.encodings.cppn_genome import MutationRates

SHAPE = (1, 8, 8)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_table_defaults_pass_their_own_checks_and_are_what_the_encoding_uses(name):
    cls = encoding_class(name)
    assert cls.PARAMS and all(isinstance(p, Param) and p.help for p in cls.PARAMS.values())
    for key, param in cls.PARAMS.items():
        param.check(key, param.default)
    assert check_params(name, {}) == cls.defaults()
    resolved = make_encoding(name, SHAPE).config()
    for key, default in cls.defaults().items():
        assert resolved[key] == default, key


def test_cppn_defaults_are_mutation_rates_defaults():
    table = encoding_class("cppn").PARAMS
    for f in fields(MutationRates):
        assert table[f.name].default == f.default


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_unknown_parameter_lists_valid_names_and_defaults(name):
    cls = encoding_class(name)
    with pytest.raises(ConfigError) as info:
        make_encoding(name, SHAPE, no_such_knob=1)
    message = str(info.value)
    assert message.startswith(f"unknown parameter 'no_such_knob' for encoding {name}; valid: ")
    for key, param in cls.PARAMS.items():
        assert f"{key}={param.default}" in message


BAD = [
    ("direct", "eta", "abc", "encoding direct: eta must be a finite number > 0 (got 'abc')"),
    ("direct", "eta", 0, "eta must be a finite number > 0 (got 0)"),
    ("direct", "eta", math.nan, "(got nan)"),
    ("direct", "eta", math.inf, "(got inf)"),
    ("direct", "eta", True, "(got True)"),
    ("direct", "mutation_rate", 1.5, "mutation_rate must be a finite number in [0, 1] (got 1.5)"),
    ("direct", "mutation_rate", -0.1, "mutation_rate must be"),
    ("direct", "crossover_rate", "0.5", "crossover_rate must be"),
    ("direct", "crossover_eta", -1, "crossover_eta must be a finite number > 0"),
    ("direct", "halve_every", 2.5, "halve_every must be an integer >= 0 (got 2.5)"),
    ("direct", "halve_every", -1, "halve_every must be an integer >= 0"),
    ("direct", "halve_every", 2**63, "halve_every must be an integer >= 0 that fits 64 bits"),
    ("cppn", "p_add_node", 2, "encoding cppn: p_add_node must be a finite number in [0, 1] (got 2)"),
    ("cppn", "weight_bound", 0.0, "weight_bound must be a finite number in (0, 1000000] (got 0.0)"),
    ("cppn", "weight_bound", 1e308, "weight_bound must be a finite number in (0, 1000000] (got 1e+308)"),
    ("cppn", "render_dtype", "float16", "render_dtype must be one of float64, float32 (got 'float16')"),
    ("cppn", "render_chunk_elements", 0, "render_chunk_elements must be an integer >= 1"),
    ("cppn", "render_chunk_elements", 1e9, "render_chunk_elements must be an integer >= 1 (got 1000000000.0)"),
]


@pytest.mark.parametrize("name, key, value, message", BAD, ids=[f"{n}-{k}={v!r}" for n, k, v, _ in BAD])
def test_bad_parameter_values_are_refused(name, key, value, message):
    with pytest.raises(ConfigError) as info:
        make_encoding(name, SHAPE, **{key: value})
    assert message in str(info.value)
    # RunConfig refuses the same value, before any model is loaded.
    with pytest.raises(ConfigError, match="^x.json: encoding "):
        RunConfig.from_dict({"encoding": name, "encoding_params": {key: value}}, source="x.json")


def test_ints_are_accepted_for_floats_and_stored_as_given():
    enc = make_encoding("direct", SHAPE, eta=20, mutation_rate=1)
    assert enc.eta == 20.0 and isinstance(enc.eta, float) and enc.mutation_rate == 1.0
    config = RunConfig.from_dict({"encoding_params": {"eta": 20}})
    assert config.encoding_params == {"eta": 20}  # unchanged: the run's hash depends on it


def test_describe_params_has_one_line_per_parameter_with_its_default():
    described = describe_params()
    assert set(described) == set(ENCODINGS)
    for name, lines in described.items():
        table = encoding_class(name).PARAMS
        assert len(lines) == len(table)
        for line, (key, param) in zip(lines, table.items()):
            assert line.startswith(f"{key}={param.default}") and param.describe() in line


def test_run_help_lists_every_parameter_with_its_default_and_the_encoding_choices():
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "[cppn|direct]" in result.output
    for name in ENCODINGS:
        assert f"Encoding parameters of {name}" in result.output
        for key, param in encoding_class(name).PARAMS.items():
            assert f"{key}={param.default}" in result.output


# (encoding, base parameters, a parameter inert under them, a value other than its default,
# the setting the encoding names as the reason); and the same parameter where it counts.
INERT = [
    ("direct", {}, "crossover_eta", 2.0, "crossover_rate=0"),
    ("direct", {"mutation": "polynomial"}, "squares", 5, "mutation=polynomial"),
    ("direct", {"mutation": "polynomial"}, "square_min", 0.2, "mutation=polynomial"),
    ("direct", {"mutation": "polynomial"}, "square_max", 0.9, "mutation=polynomial"),
    ("direct", {"mutation": "squares"}, "eta", 2.0, "mutation=squares"),
    ("direct", {"mutation": "squares"}, "mutation_rate", 0.9, "mutation=squares"),
    ("direct", {"mutation": "squares"}, "halve_every", 1, "mutation=squares"),
    ("direct", {"mutation": "lattice"}, "eta", 2.0, "mutation=lattice"),
    ("direct", {"mutation": "lattice"}, "square_max", 0.9, "mutation=lattice"),
    ("direct", {"mutation": "polynomial"}, "period_max", 0.9, "mutation=polynomial"),
    ("direct", {"mutation": "squares"}, "period_max", 0.9, "mutation=squares"),
    ("direct", {"mutation": "waves"}, "period_max", 0.9, "mutation=waves"),
    ("direct", {"mutation": "lattice"}, "amplitude_max", 64.0, "mutation=lattice"),
    ("direct", {"mutation": "patterns"}, "squares", 5, "mutation=patterns"),
    ("direct", {"mutation": "patterns"}, "halve_every", 1, "mutation=patterns"),
    ("direct", {}, "eta", 2.0, "mutation=patterns"),  # the default mutation
    ("direct", {}, "square_max", 0.9, "mutation=patterns"),
    ("cppn", {}, "crossover", "line", "crossover_rate=0"),
    ("cppn", {}, "crossover_sigma", 3.0, "crossover_rate=0"),
    ("cppn", {"crossover_rate": 0.9}, "crossover_sigma", 3.0, "crossover=uniform"),
    ("cppn", {}, "wave_weight", 0.3, "p_add_wave=0"),
    ("cppn", {}, "weights_only_output", 0.5, "p_weights_only=0"),
    ("cppn", {"p_weights_only": 0.5}, "weights_only_sigma", 0.3, "weights_only_output=0"),
    ("cppn", {"p_weights_only": 0.5, "weights_only_output": 1.0}, "weights_only_p_weight", 0.5,
     "weights_only_output=1"),
    ("cppn", {"p_weights_only": 0.5, "weights_only_output": 1.0}, "weights_only_eta", 100.0,
     "weights_only_output=1"),
]
COUNTS = [
    ("direct", {"crossover_rate": 0.9, "mutation": "polynomial"}, "crossover_eta", 2.0),
    ("direct", {"mutation": "squares"}, "squares", 5),
    ("direct", {"mutation": "lattice"}, "period_max", 0.9),
    ("direct", {"mutation": "waves"}, "amplitude_max", 64.0),
    ("direct", {"mutation": "rings"}, "wave_period_max", 0.9),
    ("direct", {"mutation": "patterns"}, "period_max", 0.9),
    ("direct", {"mutation": "patterns"}, "amplitude_min", 64.0),
    ("direct", {"mutation": "polynomial"}, "eta", 2.0),
    ("direct", {}, "period_max", 0.9),  # the default mutation
    ("direct", {}, "amplitude_max", 64.0),
    ("cppn", {"crossover_rate": 0.9}, "crossover", "line"),
    ("cppn", {"crossover_rate": 0.9, "crossover": "line"}, "crossover_sigma", 3.0),
    ("cppn", {"p_add_wave": 0.5}, "wave_weight", 0.3),
    ("cppn", {"p_weights_only": 0.5}, "weights_only_output", 0.5),
    ("cppn", {"p_weights_only": 0.5}, "weights_only_output", 1.0),
    ("cppn", {"p_weights_only": 0.5, "weights_only_output": 1.0}, "weights_only_sigma", 0.3),
    ("cppn", {"p_weights_only": 0.5, "weights_only_output": 0.5, "weights_only_p_weight": 0.02},
     "weights_only_p_weight", 0.5),
]


def _offspring(name: str, params: dict, generation: int = 3) -> torch.Tensor:
    """Images of the children of 12 random parents (the same draws for any parameters)."""
    enc = make_encoding(name, (3, 16, 16), **params)
    rng = np.random.default_rng(5)
    parents = enc.random(12, rng)
    for _ in range(3):  # grown CPPNs share more genes, so crossover has something to change
        parents = enc.vary(parents, rng, generation)
    return enc.render(enc.vary(parents, rng, generation))


@pytest.mark.parametrize("name, base, key, value, why", INERT)
def test_a_parameter_declared_inert_changes_no_offspring_and_is_named(name, base, key, value, why):
    cls = encoding_class(name)
    assert value != cls.PARAMS[key].default
    assert cls.inert_params({key}, {**base, key: value}) == {key: why}
    assert torch.equal(_offspring(name, base), _offspring(name, {**base, key: value}))


@pytest.mark.parametrize("name, base, key, value", COUNTS)
def test_the_same_parameter_where_it_counts_changes_offspring_and_is_not_named(name, base, key, value):
    assert encoding_class(name).inert_params({key}, {**base, key: value}) == {}
    assert not torch.equal(_offspring(name, base), _offspring(name, {**base, key: value}))


def test_run_names_given_inert_parameters_in_one_note_line(tmp_path):
    """Typed or in run.toml, a parameter another one switches off: the run goes on and one
    line names it with the setting; a parameter that counts gets no note."""
    toml = tmp_path / "run.toml"
    toml.write_text("[encoding_params]\nsquares = 3\n")
    args = ["run", "--generations", "1", "--population", "20", "--quiet", "--no-gallery"]
    runner = CliRunner()
    result = runner.invoke(cli, [*args, "--param", "crossover_eta=2", "--config", str(toml),
                                 "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("note:")] == [
        "note: ignored with crossover_rate=0: --param crossover_eta; with mutation=patterns: --param squares"]
    counted = runner.invoke(cli, [*args, "--encoding", "cppn", "--param", "crossover_rate=0.5", "--param",
                                  "crossover=line", "--param", "crossover_sigma=2", "--out", str(tmp_path / "b")])
    assert counted.exit_code == 0, counted.output
    assert "note:" not in counted.output
