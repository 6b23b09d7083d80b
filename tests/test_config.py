"""``RunConfig``'s one check of every value, the small-file readers and the memory bound."""

from __future__ import annotations

import json
import math
import os

import pytest

from evofool.config import (
    MAX_POPULATION,
    SEED_LIMIT,
    ConfigError,
    Param,
    RunConfig,
    batch_bytes,
    check_batch_memory,
    largest_population,
    load_toml,
    read_json_object,
    read_small_text,
)
from evofool.errors import EvofoolError
from evofool.models.torchscript import read_sidecar

# --- values --------------------------------------------------------------------------------

BAD_VALUES = [
    ("population", 0, "population must be an integer from 1 to 1000000 (got 0)"),
    ("population", MAX_POPULATION + 1, "population must be an integer from 1 to 1000000"),
    ("population", 2.5, "(got 2.5)"),
    ("population", True, "(got True)"),
    ("population", "5", "(got '5')"),
    ("population", None, "(got None)"),
    ("generations", -1, "generations must be an integer >= 0 (got -1)"),
    ("generations", 2**63, "generations must be an integer >= 0 that fits 64 bits"),
    ("generations", 5.0, "(got 5.0)"),
    ("seed", -1, "seed must be an integer from 0 to 18446744073709551615 (got -1)"),
    ("seed", SEED_LIMIT, "seed must be an integer from 0 to"),
    ("seed", 2**70, "seed must be"),
    ("max_batch", 0, "max_batch must be an integer >= 1"),
    ("checkpoint_every", -5, "checkpoint_every must be an integer >= 0"),
    ("workers", -1, "workers must be an integer from 0 to 4096"),
    ("stop_at", math.nan, "stop_at must be a finite number in (0, 1] (got nan)"),
    ("stop_at", 0.0, "stop_at must be a finite number in (0, 1]"),
    ("stop_at", 1.5, "stop_at must be"),
    ("stop_at", "0.9", "(got '0.9')"),
    ("focus_below", math.inf, "focus_below must be a finite number in (0, 1] (got inf)"),
    ("focus_below", False, "(got False)"),
    ("crops", 2, "crops must be one of 1, 10 (got 2)"),
    ("crops", True, "crops must be one of 1, 10 (got True)"),
    ("crops", 10.0, "(got 10.0)"),
    ("precision", "half", "precision must be one of auto, float32, bfloat16, float16 (got 'half')"),
    ("runtime", "ort", "runtime must be one of auto, torch, onnxruntime (got 'ort')"),
    ("threads", -1, "threads must be an integer from 0 to 4096 (got -1)"),
    ("threads", 1.5, "(got 1.5)"),
    ("selection", "best", "selection must be one of uniform, lagging"),
    ("model", 5, "model must be a string (got 5)"),
    ("device", 0, "device must be a string (got 0)"),
    ("ray", ["auto"], "ray must be a string"),
    ("encoding", None, "encoding must be a string"),
    ("encoding", "pixels", "unknown encoding 'pixels'; choose one of: cppn, direct"),
    ("encoding_params", [1], "encoding_params must be a table of name = value"),
    ("encoding_params", {"etaa": 3}, "unknown parameter 'etaa' for encoding direct; valid: eta=15.0"),
    ("encoding_params", {"eta": "abc"}, "encoding direct: eta must be a finite number > 0 (got 'abc')"),
    ("recombine", "2,x", "recombine must be auto, off or comma-separated step lengths"),
    ("recombine", [True, 2], "recombine must be auto, off or a list of step lengths"),
    ("recombine", ["2"], "recombine must be auto, off or a list"),
    ("recombine", [2, -1], "recombine step lengths must be > 0"),
    ("recombine", 5, "recombine must be a string or a list (got 5)"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_value_is_refused_on_one_line(key, value, message):
    # A file's key is named as written there; without a file, as its option (dashes).
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({key: value}, source="run.toml")
    assert str(info.value).startswith("run.toml: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({key: value})
    assert message.replace(key, key.replace("_", "-")) in str(info.value)


GOOD_VALUES = [
    ("population", 1), ("population", MAX_POPULATION), ("generations", 0), ("seed", SEED_LIMIT - 1),
    ("stop_at", None), ("stop_at", 1), ("stop_at", 1.0), ("focus_below", 1), ("crops", 10),
    ("device", "cpu"), ("ray", None), ("recombine", "off"), ("recombine", [2, 4.5]), ("recombine", []),
    ("encoding", "ascent"),  # recorded by `evofool ascent`, whose own checks apply to its params
    ("encoding_params", {"eta": 20}),
    ("runtime", "onnxruntime"), ("runtime", "auto"), ("threads", 0), ("threads", 4),
]


@pytest.mark.parametrize("key, value", GOOD_VALUES, ids=[f"{k}={v!r}" for k, v in GOOD_VALUES])
def test_good_value_is_kept_exactly(key, value):
    config = RunConfig.from_dict({key: value})
    # Kept as given (an int stays an int): the config's hash, and so old run folders, stay the same.
    assert getattr(config, key) == value and type(getattr(config, key)) is type(value)


def test_defaults_validate_and_hashes_are_those_of_existing_run_folders():
    # The hashes before the checks existed: existing run folders must still resume.
    assert RunConfig().validate().hash() == "792f242b2504801f"
    assert RunConfig(encoding="cppn", encoding_params={"eta": 20}, seed=5).hash() == "aecf877ef8a066b9"
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    # runtime and threads change no hash: a run's meaning is not how fast it is scored.
    assert RunConfig(runtime="onnxruntime", threads=2).hash() == "792f242b2504801f"
    # weight_steps, added later, enters the hash only where it is on (0 is what earlier runs did).
    assert RunConfig(weight_steps=0.0).hash() == "792f242b2504801f"
    assert RunConfig(encoding="cppn", weight_steps=0.5).hash() != RunConfig(encoding="cppn").hash()
    assert RunConfig(weight_steps=0.5).differing_keys(RunConfig()) == ["weight_steps"]
    # So does extrapolate (off is what earlier runs did); a config without it reads as off.
    assert RunConfig(extrapolate="off").hash() == "792f242b2504801f"
    assert RunConfig(encoding="cppn", extrapolate="on").hash() != RunConfig(encoding="cppn").hash()
    recorded = RunConfig().to_dict()
    del recorded["extrapolate"]
    assert RunConfig.from_dict(recorded).extrapolate == "off"


def test_refine_lr_is_part_of_a_refine_runs_meaning_only():
    """--refine-lr came after the first --refine grad runs, which stepped at FIRST_REFINE_LR:
    their recorded configs keep that rate and their hash; black-box runs ignore the key."""
    from evofool.emitters import FIRST_REFINE_LR
    from evofool.encodings.cppn import CPPNEncoding

    assert CPPNEncoding.refine_lr != FIRST_REFINE_LR
    first = RunConfig(encoding="cppn", refine="grad").to_dict()
    del first["refine_lr"], first["refine_adapt"]  # neither existed then
    recorded = RunConfig.from_dict(first)
    assert recorded.refine_lr == FIRST_REFINE_LR
    assert recorded.hash() == "9d8c393ae46e677f"  # what the code before the key recorded
    assert RunConfig(encoding="cppn", refine="grad").hash() != recorded.hash()  # today's default rate
    assert RunConfig(encoding="cppn", refine="grad", refine_lr=0.03).differing_keys(
        RunConfig(encoding="cppn", refine="grad")) == ["refine_lr"]
    # Black-box: the rate computes nothing, so it never changes the hash.
    assert RunConfig(refine_lr=0.5).hash() == RunConfig().hash() == "792f242b2504801f"


def test_refine_lr_defaults_to_the_encodings_own_and_a_new_run_records_it():
    """No --refine-lr: each encoding's step for its weights' scale (cppn 0.01 on the links into
    its outputs, 3e-4 with refine_links=all; direct 0.01 on pixels), written into a new run's
    config; a cppn refine run of every link has the hash it had before refine_links existed."""
    from evofool.encodings.cppn import CPPNEncoding
    from evofool.encodings.direct import DirectEncoding

    every_link = {"refine_links": "all"}
    for encoding, params, own in (("cppn", {}, 0.01), ("cppn", every_link, 3e-4), ("direct", {}, 0.01)):
        given = RunConfig(encoding=encoding, refine="grad", encoding_params=params)
        assert given.refine_lr is None and given.resolved_refine_lr() == own
        assert given.for_new_run().refine_lr == own and "refine_lr" not in given.for_new_run().differing_keys(given)
        assert RunConfig(encoding=encoding, refine="grad", refine_lr=own, encoding_params=params).hash() == given.hash()
    assert CPPNEncoding.refine_lr == CPPNEncoding.default_refine_lr({}) == DirectEncoding.refine_lr
    # As before refine_links and --refine-adapt (every link, one lr for every cell, as then).
    assert RunConfig(encoding="cppn", refine="grad", refine_adapt="off",
                     encoding_params=every_link).hash() == "feb634326e3247ff"


def test_refine_links_is_all_for_recorded_cppn_runs_and_output_for_new_ones():
    """refine_links came after the first cppn refine runs, which stepped every link: a config
    read back without it keeps that (and its recorded lr and hash); a new run records
    ``output`` and its lr; a bad value is one line that lists the choices."""
    from evofool.encodings.cppn import CPPNEncoding

    old = RunConfig(encoding="cppn", refine="grad", refine_lr=3e-4, encoding_params={"eta": 15})
    recorded = RunConfig.from_record(old.to_dict())
    assert recorded.encoding_params["refine_links"] == "all" and recorded.resolved_refine_lr() == 3e-4
    assert recorded.hash() == old.hash() == RunConfig(
        encoding="cppn", refine="grad", refine_lr=3e-4, encoding_params={"eta": 15, "refine_links": "all"}).hash()
    new = RunConfig(encoding="cppn", refine="grad", encoding_params={"eta": 15}).for_new_run()
    assert new.encoding_params["refine_links"] == "output" and new.refine_lr == 0.01
    assert new.hash() != recorded.hash() and RunConfig.from_record(new.to_dict()) == new
    # Black-box, the parameter computes nothing: not part of the hash.
    assert RunConfig(encoding="cppn", encoding_params={"refine_links": "output"}).hash() == RunConfig(
        encoding="cppn").hash() == RunConfig(encoding="cppn", encoding_params={"refine_links": "all"}).hash()
    with pytest.raises(ConfigError, match=r"refine_links.*output, all.*'some'"):
        CPPNEncoding((3, 8, 8), refine_links="some")


def test_refine_adapt_is_off_for_recorded_runs_and_part_of_a_refine_runs_meaning_only():
    """--refine-adapt came after the first refine runs: a config recorded without it steps
    every cell at one lr (its hash unchanged); a new refine run adapts by default, which is
    part of its meaning; a black-box run's hash never holds it; a bad value is one line."""
    first = RunConfig(encoding="direct", refine="grad").for_new_run().to_dict()
    del first["refine_adapt"]
    recorded = RunConfig.from_dict(first)
    assert recorded.refine_adapt == "off"
    assert recorded.hash() == RunConfig(encoding="direct", refine="grad", refine_adapt="off").for_new_run().hash()
    adapted = RunConfig(encoding="direct", refine="grad")
    assert adapted.refine_adapt == "on" and adapted.for_new_run().differing_keys(recorded) == ["refine_adapt"]
    assert RunConfig(refine_adapt="on").hash() == RunConfig().hash()  # black-box: no refine step to adapt
    with pytest.raises(ConfigError, match=r"refine-adapt must be one of off, on \(got 'yes'\)"):
        RunConfig.check_values({"refine_adapt": "yes"})
    assert RunConfig(encoding="cppn", refine="grad", refine_lr=0.5).resolved_refine_lr() == 0.5


def test_an_encoding_default_changed_after_runs_were_recorded_keeps_their_meaning_and_hash():
    """render_dtype became float32 after CPPN runs had been recorded without the key (they
    rendered in float64): a new run records it, a read one takes the legacy value, and a
    legacy value stays out of the hash."""
    given = RunConfig(encoding="cppn", encoding_params={"eta": 20}, seed=5)
    new = given.for_new_run()
    assert new.encoding_params == {"eta": 20, "render_dtype": "float32", "refine_links": "output"}
    assert new.hash() != given.hash() and new.differing_keys(given) == ["encoding_params"]
    recorded = RunConfig.from_record(given.to_dict())
    assert recorded.encoding_params == {"eta": 20, "render_dtype": "float64", "refine_links": "all"}
    assert recorded.hash() == "aecf877ef8a066b9"  # the hash such folders hold
    assert RunConfig.from_record(new.to_dict()) == new  # recorded explicitly: read back as written
    # The direct encoding's mutation and init became patterns from flat colours in the same way:
    # a folder recorded before holds the paper's polynomial mutation from noise, and its hash.
    direct = RunConfig.from_record(RunConfig().to_dict())
    assert direct.encoding_params == {"mutation": "polynomial", "init": "noise"}
    assert direct.hash() == "792f242b2504801f"  # the hash such folders hold
    assert RunConfig().for_new_run().encoding_params == {"mutation": "patterns", "init": "flat"}
    assert RunConfig().for_new_run().hash() != direct.hash()


def test_a_config_recorded_before_runtimes_means_torch():
    """config.json files written before the runtime field existed were scored with torch."""
    recorded = {k: v for k, v in RunConfig().to_dict().items() if k not in ("runtime", "threads")}
    assert RunConfig.from_dict(recorded).runtime == "torch"
    assert RunConfig.from_dict(recorded).threads == 0  # no legacy value: the default
    assert RunConfig().runtime == "auto"  # new runs


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"populaton": 5, "colour": 1}, source="config.json")
    message = str(info.value)
    assert message.startswith("config.json: unknown config keys 'colour', 'populaton'; valid: ")
    assert "checkpoint_every, crops, device, encoding" in message and "population" in message


def test_command_line_names_use_dashes_and_files_their_keys():
    with pytest.raises(ConfigError, match="^max-batch must be"):
        RunConfig(max_batch=0).validate()
    with pytest.raises(ConfigError, match="^x.toml: max_batch must be"):
        RunConfig(max_batch=0).validate(source="x.toml")


def test_from_dict_needs_a_dict():
    with pytest.raises(TypeError):
        RunConfig.from_dict(["population", 5])


def test_a_huge_bad_value_is_shown_short():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"model": ["x" * 10_000]})
    assert len(str(info.value)) < 200


def test_param_descriptions():
    assert Param(int, low=1, high=10).describe() == "an integer from 1 to 10"
    assert Param(int, low=0).describe() == "an integer >= 0"
    assert Param(float, low=0.0, low_open=True).describe() == "a finite number > 0"
    assert Param(float, low=0.0, high=1.0, low_open=True).describe() == "a finite number in (0, 1]"
    assert Param(str, choices=("a", "b")).describe() == "one of a, b"
    assert Param(list, item=Param(str), min_length=1).describe() == "a list of 1 or more, each a string"
    assert Param(list, item=Param(int), length=3).describe() == "a list of 3, each an integer"
    assert Param(float).problem("x", 10**300) is None  # an int is a number...
    # ... if a float can hold it.
    assert Param(float).problem("x", 10**400).startswith("x must be a finite number (got 1000")
    assert Param(float).problem("x", -math.inf) == "x must be a finite number (got -inf)"
    assert Param(list, item=Param(int), length=2).problem("s", [1, "2"]) == "s[1] must be an integer (got '2')"


# --- run.toml --------------------------------------------------------------------------------

def test_toml_values_are_checked_naming_the_file(tmp_path):
    good = tmp_path / "run.toml"
    good.write_text('max-batch = 64\npopulation = 30\n[encoding_params]\neta = 20\n')
    assert load_toml(good) == {"max_batch": 64, "population": 30, "encoding_params": {"eta": 20}}
    bad = tmp_path / "bad.toml"
    for text, message in [('population = "abc"', "population must be an integer"),
                          ("generations = 2.5", "generations must be an integer"),
                          ("seed = true", "seed must be an integer"),
                          ("typo = 1", "unknown config key 'typo'; valid:"),
                          ("population = = 1", "is not valid TOML"),
                          ("x = " + "[" * 5000 + "]" * 5000, "is not valid TOML")]:
        bad.write_text(text + "\n")
        with pytest.raises(ConfigError) as info:
            load_toml(bad)
        assert str(bad) in str(info.value) and message in str(info.value), str(info.value)[:300]


def test_toml_unreadable_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'model = "\xff\xfe"\n')
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would block forever
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (5 * 2**20))
    cases = [(binary, "is not UTF-8 text"), (tmp_path / "missing.toml", "does not exist"),
             (tmp_path, "is not a regular file"), (fifo, "is not a regular file"), (big, "at most")]
    for path, message in cases:
        with pytest.raises(EvofoolError, match=message) as info:
            load_toml(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- sidecars --------------------------------------------------------------------------------

def test_json_object_reader(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
    for text, message in [("[1, 2]", "must hold a JSON object"), ("{", "is not valid JSON"),
                          ("[" * 100_000, "nested too deeply")]:
        path.write_text(text)
        with pytest.raises(EvofoolError, match=message):
            read_json_object(path)
    assert read_small_text(path)  # the reader itself


SIDECAR = {"input_shape": [3, 8, 8], "class_names": ["a", "b"]}
BAD_SIDECARS = [
    ({"input_shape": [1, 0, 28]}, "input_shape[1] must be an integer from 1 to 4096 (got 0)"),
    ({"input_shape": [1, 28, 5000]}, "input_shape[2] must be an integer from 1 to 4096"),
    ({"input_shape": [True, 8, 8]}, "input_shape[0] must be an integer"),
    ({"input_shape": [3, 8, 8, 1]}, "input_shape must be a list of 3"),
    ({"input_shape": "3,8,8"}, "input_shape must be a list of 3"),
    ({"input_shape": [4, 8, 8]}, "input_shape[0] (channels) must be one of 1, 3 (got 4)"),
    ({"class_names": []}, "class_names must be a list of 1 to 1000000, each a string (got [])"),
    ({"class_names": "ab"}, "class_names must be a list"),
    ({"mean": [0.5, 0.5]}, "mean must be a list of 3"),
    ({"mean": [0.5, float("nan"), 0.5]}, "mean[1] must be a finite number (got nan)"),
    ({"std": [1.0, 0.0, 1.0]}, "std[1] must be a finite number > 0 (got 0.0)"),
    ({"std": [1.0, -1.0, 1.0]}, "std[1] must be a finite number > 0"),
    ({"scale": 0}, "scale must be a finite number > 0"),
    ({"outputs": "softmax"}, "outputs must be one of logits, probs"),
    ({"stds": [1, 1, 1]}, "unknown key 'stds'; valid: class_names, input_shape, mean, outputs, scale, std"),
]


@pytest.mark.parametrize("change, message", BAD_SIDECARS, ids=[m.split(" ")[0] for _, m in BAD_SIDECARS])
def test_torchscript_sidecar_checks_name_file_and_key(tmp_path, change, message):
    side = tmp_path / "m.pt.json"
    side.write_text(json.dumps({**SIDECAR, **change}))
    with pytest.raises(EvofoolError) as info:
        read_sidecar(side)
    assert str(info.value) == f"{side}: {message}" or str(info.value).startswith(f"{side}: {message}")


def test_torchscript_sidecar_defaults():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        side = Path(tmp) / "m.pt.json"
        side.write_text(json.dumps({"input_shape": [1, 4, 4], "class_names": ["a"], "mean": [0]}))
        meta = read_sidecar(side)
    assert meta["mean"] == [0.0] and meta["std"] == [1.0] and meta["scale"] == 1.0 and meta["outputs"] == "logits"


# --- memory ----------------------------------------------------------------------------------

def test_batch_memory_estimate_and_refusal():
    shape = (3, 224, 224)
    small = batch_bytes(10, shape, 1000, 1024)
    assert 10 * math.prod(shape) * 4 < small < batch_bytes(20, shape, 1000, 1024)
    check_batch_memory(200, (1, 28, 28), 10, 1024, available=2**30)  # the default run fits in 1 GiB
    with pytest.raises(ConfigError) as info:
        check_batch_memory(100_000, shape, 1000, 1024, available=2**30)
    fits = largest_population(shape, 1000, 1024, int(2**30 * 0.8))
    assert 0 < fits < 100_000
    message = str(info.value)
    assert message.startswith("population 100000 of 3×224×224 images needs about ")
    assert f"use --population {fits} or less" in message
    check_batch_memory(fits, shape, 1000, 1024, available=2**30)
    with pytest.raises(ConfigError, match="no population fits"):
        check_batch_memory(1, shape, 1000, 1024, available=1000)


def test_host_memory_is_measured():
    check_batch_memory(1, (1, 28, 28), 10, 1024)  # measured: a tiny run fits on any machine
    with pytest.raises(ConfigError, match="needs about"):
        check_batch_memory(MAX_POPULATION, (3, 4096, 4096), 10, 1024)


def test_refine_balance_is_off_unless_asked_and_part_of_a_refine_runs_meaning_only():
    """--refine-balance came after the first refine runs: a config recorded without it has a
    fixed share (and its hash); on, it is part of a refine run's meaning, never of a
    black-box run's; a bad value is one line listing the choices."""
    first = RunConfig(encoding="direct", refine="grad").for_new_run().to_dict()
    del first["refine_balance"]
    recorded = RunConfig.from_dict(first)
    assert recorded.refine_balance == "off" == RunConfig().refine_balance
    assert recorded.hash() == RunConfig(encoding="direct", refine="grad").for_new_run().hash()
    on = RunConfig(encoding="direct", refine="grad", refine_balance="on")
    assert on.differing_keys(RunConfig(encoding="direct", refine="grad")) == ["refine_balance"]
    assert RunConfig(refine_balance="on").hash() == RunConfig().hash()  # black-box: computes nothing
    with pytest.raises(ConfigError, match=r"refine-balance must be one of off, on \(got 'yes'\)"):
        RunConfig.check_values({"refine_balance": "yes"})
