"""Reads what a gallery shows from a run folder, checking that everything it needs is there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evofool.errors import EvofoolError
from evofool.models.base import class_named
from evofool.models.outputs import LOG_PROB
from evofool.runfolder import (CHAMPIONS, CONFIDENCE, SUMMARY, RunFolder, champion_fitness,
                               champions_fitness_kind)


@dataclass(frozen=True)
class Champion:
    """One class's (or unit's) champion as archived in ``champions.json``.

    Attributes:
        index: Class index (model output).
        name: Class name.
        fitness: What champions compete on: the archived log-probability (more precise than
            ``confidence`` near 1), or a unit run's activation.
        confidence: Archived softmax confidence for the class; ``None`` for a unit run,
            whose fitness is an activation and no probability.
        generation: Generation the champion was found in.
        source: Path of the run's champion PNG.
        file: That path as ``champions.json`` gives it (relative to the run folder).
        png: The PNG's bytes, read with ``champions.json`` as one checkpoint wrote them
            (``RunFolder.read_champion_files``): a run going on re-writes the file.
    """

    index: int
    name: str
    fitness: float
    confidence: float | None
    generation: int
    source: Path
    file: str
    png: bytes = field(default=b"", repr=False, compare=False)

    def values(self) -> dict:
        """The champion's reported values as a manifest records them: ``confidence`` and
        ``log_prob``, or a unit's ``activation``."""
        if self.confidence is None:
            return {"activation": self.fitness}
        return {CONFIDENCE: self.confidence, "log_prob": self.fitness}


@dataclass
class RunData:
    """Everything the gallery needs from one run folder.

    Attributes:
        folder: The run folder.
        config: The run config as stored in ``config.json``.
        config_hash: The config's hash.
        version: The evofool version that made the run.
        class_names: All of the model's class names.
        champions: Champions of filled classes, in class order.
        log: Per-generation records (damaged lines skipped, see ``RunFolder.scan_log``).
        summary: ``summary.json`` (empty when absent or damaged).
        fitness_kind: ``log_prob`` (classes, confidences) or ``score`` (units, activations).
        log_damaged: Numbers of the log's damaged lines (a torn last line, which a run being
            written may show, not counted).
    """

    folder: RunFolder
    config: dict
    config_hash: str
    version: str
    class_names: list[str]
    champions: list[Champion]
    log: list[dict]
    summary: dict
    fitness_kind: str = LOG_PROB
    log_damaged: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_probability(self) -> bool:
        """Whether the champions' values are class probabilities (not a unit run's activations)."""
        return self.fitness_kind == LOG_PROB

    @property
    def cells(self) -> str:
        """What the archive's cells are, as the gallery names them: ``classes`` or ``units``."""
        return "classes" if self.is_probability else "units"

    @property
    def generations_done(self) -> int:
        """The newest generation in the log (or the summary), 0 before any."""
        gens = [int(r["generation"]) for r in self.log if isinstance(r.get("generation"), int)]
        return max(gens + [int(self.summary.get("generation") or 0)])

    @property
    def finished(self) -> bool:
        """Whether the run reached its configured number of generations."""
        return self.generations_done >= int(self.config.get("generations") or 0)

    @property
    def name_width(self) -> int:
        """Digits of the class index in file names (as the run folder uses)."""
        return max(4, len(str(self.num_classes - 1)))


def _read_summary(folder: RunFolder) -> dict:
    """``summary.json`` (empty when absent or damaged: the gallery can do without it)."""
    try:
        data = folder.read_json(SUMMARY)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _champion(folder: RunFolder, entry: object, class_names: list[str], fitness_kind: str,
              files: dict[str, bytes]) -> Champion:
    """One validated ``champions.json`` entry, with its PNG's bytes (``files``: by file name)."""
    where = folder.path / CHAMPIONS
    try:
        index = int(entry["class"])
        file = str(entry["file"])
        confidence = float(entry[CONFIDENCE]) if fitness_kind == LOG_PROB else None
        champion = Champion(index=index, name=str(entry.get("name", class_names[index])),
                            fitness=champion_fitness(entry, fitness_kind), confidence=confidence,
                            generation=int(entry["generation"]), source=folder.path / file, file=file,
                            png=files.get(file, b""))
    except (KeyError, TypeError, ValueError, IndexError):
        raise EvofoolError(f"{where} is damaged (bad champion entry {str(entry)[:80]})") from None
    if not 0 <= index < len(class_names):
        raise EvofoolError(f"{where} is damaged (class {index} outside 0..{len(class_names) - 1})")
    if file not in files:  # read_champion_files checked the rest: inside the folder, no link, regular
        raise EvofoolError(f"{champion.source} is missing (listed in {where})")
    return champion


def load_run(path: str | Path) -> RunData:
    """Opens a run folder and reads its config, champions, log and summary.

    Raises:
        EvofoolError: not a run folder, damaged ``config.json`` or ``champions.json``,
            no champions yet, or a champion PNG that is missing.
    """
    folder = RunFolder.open(path)
    doc = folder.read_config_doc()
    names = doc.get("class_names")
    if not isinstance(names, list) or not names:
        raise EvofoolError(f"{folder.path / 'config.json'} is damaged (no class names)")
    class_names = [str(n) for n in names]
    data, files = folder.read_champion_files()
    entries = data.get("champions") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise EvofoolError(f"{folder.path / CHAMPIONS} is damaged (no champions list)")
    kind = champions_fitness_kind(data)
    champions = sorted((_champion(folder, e, class_names, kind, files) for e in entries), key=lambda c: c.index)
    if not champions:
        raise EvofoolError(f"{folder.path / CHAMPIONS} lists no champions yet")
    if len({c.index for c in champions}) != len(champions):
        raise EvofoolError(f"{folder.path / CHAMPIONS} is damaged (a class is listed twice)")
    log = folder.scan_log()
    return RunData(folder=folder, config=dict(doc["config"]), config_hash=str(doc.get("config_hash", "")),
                   version=str(doc.get("evofool_version", "")), class_names=class_names,
                   champions=champions, log=log.records, summary=_read_summary(folder),
                   fitness_kind=kind, log_damaged=log.damaged_inside)


def select(run: RunData, classes: str | list | None = None, top: int | None = None) -> list[Champion]:
    """The champions an export shows, in the order it shows them.

    Args:
        run: The run.
        classes: ``"3,5,seven"`` (indices or names) or a list of them; ``None``: all.
        top: Keep only the ``top`` best (highest fitness: confidence or activation, best first).

    Raises:
        EvofoolError: an unknown class, a class without a champion, ``top`` < 1.
    """
    by_index = {c.index: c for c in run.champions}
    chosen = list(run.champions)
    if classes is not None:
        tokens = [t.strip() for t in classes.split(",")] if isinstance(classes, str) else [str(t) for t in classes]
        tokens = [t for t in tokens if t]
        if not tokens:
            raise EvofoolError("--classes needs at least one class index or name")
        chosen = []
        for token in tokens:
            index = _class_index(token, run.class_names)
            if index not in by_index:
                raise EvofoolError(f"class {token!r} has no champion in {run.folder.path} yet")
            if by_index[index] not in chosen:
                chosen.append(by_index[index])
    if top is not None:
        if top < 1:
            raise EvofoolError(f"--top must be at least 1 (got {top})")
        chosen = sorted(chosen, key=lambda c: (-c.fitness, c.index))[:top]
    return chosen


def _class_index(token: str, class_names: list[str]) -> int:
    """A class given by name (exact, then case-insensitive) or index.

    Raises:
        EvofoolError: no such class, or a name several classes share (ImageNet has two
            "crane" and two "maillot"): the indices are listed, to give one of them.
    """
    for ignore_case in (False, True):
        index = class_named(token, class_names, ignore_case)
        if index is not None:
            return index
    if token.isdigit() and int(token) < len(class_names):
        return int(token)
    raise EvofoolError(f"unknown class {token!r} (give indices 0..{len(class_names) - 1} or class names)")
