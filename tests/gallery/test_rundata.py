"""What a gallery reads from a run folder: champions (of both kinds of run) and their selection."""

from __future__ import annotations

import pytest

from evofool.errors import EvofoolError
from evofool.gallery.rundata import load_run, select


def test_select(tmp_path, fake_run):
    run = load_run(fake_run(tmp_path / "r", 20, shape=(1, 8, 8)).path)
    assert [c.index for c in select(run)] == list(range(20))
    assert [c.index for c in select(run, "5, 2,5")] == [5, 2]
    name = run.class_names[7]
    assert [c.index for c in select(run, [name.upper(), "3"])] == [7, 3]
    best = select(run, top=5)
    assert [c.fitness for c in best] == sorted((c.fitness for c in run.champions), reverse=True)[:5]
    with pytest.raises(EvofoolError, match="unknown class"):
        select(run, "20")
    with pytest.raises(EvofoolError, match="at least one"):
        select(run, " , ")


def test_a_unit_run_s_champions_are_activations(unit_run):
    run = load_run(unit_run)
    assert run.fitness_kind == "score" and not run.is_probability and run.cells == "units"
    assert all(c.confidence is None for c in run.champions)
    assert [c.index for c in select(run, top=2)] == [c.index for c in sorted(run.champions,
                                                                             key=lambda c: -c.fitness)][:2]


def test_champions_json_written_before_it_named_its_kind(tmp_path, unit_run):
    """A unit run from before ``fitness_kind`` wrote each activation as confidence and log_prob;
    a probability run from before ``log_prob`` only the confidence: both still read right."""
    import json
    import math
    import shutil

    old_units = shutil.copytree(unit_run, tmp_path / "units", ignore=shutil.ignore_patterns("gallery"))
    doc = json.loads((old_units / "champions.json").read_text())
    del doc["fitness_kind"]
    for entry in doc["champions"]:
        entry["confidence"] = entry["log_prob"] = entry.pop("activation")
    (old_units / "champions.json").write_text(json.dumps(doc))
    run = load_run(old_units)
    assert run.fitness_kind == "score" and [c.fitness for c in run.champions] == [
        e["confidence"] for e in doc["champions"]]

    probs = shutil.copytree(old_units, tmp_path / "probs")
    for entry in doc["champions"]:
        entry["confidence"] = 0.25 + entry["class"] / 10
        del entry["log_prob"]
    (probs / "champions.json").write_text(json.dumps(doc))
    run = load_run(probs)
    assert run.fitness_kind == "log_prob"
    assert [c.fitness for c in run.champions] == pytest.approx([math.log(0.25 + k / 10) for k in range(3)])


def test_a_class_name_several_classes_share_asks_for_the_index(tmp_path, fake_run):
    """ImageNet has two "crane" and two "maillot": --classes crane must not pick one silently."""
    folder = fake_run(tmp_path / "r", 6, shape=(1, 8, 8))
    run = load_run(folder.path)
    names = list(run.class_names)
    names[4] = names[1]
    run.class_names[:] = names
    with pytest.raises(EvofoolError, match=f"'{names[1]}' is shared by classes 1, 4: give the index"):
        select(run, names[1])
    with pytest.raises(EvofoolError, match="shared by classes 1, 4"):
        select(run, names[1].upper())  # the case-insensitive match is as ambiguous
    assert [c.index for c in select(run, "4,1")] == [4, 1]
