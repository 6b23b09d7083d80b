"""Reads what a gallery shows from a run folder, checking that everything it needs is there."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from evofool.errors import EvofoolError
from evofool.runfolder import CHAMPIONS, SUMMARY, RunFolder


@dataclass(frozen=True)
class Champion:
    """One class's champion as archived in ``champions.json``.

    Attributes:
        index: Class index (model output).
        name: Class name.
        confidence: Archived softmax confidence for the class.
        log_prob: Archived log-probability (more precise than ``confidence`` near 1).
        generation: Generation the champion was found in.
        source: Path of the run's champion PNG.
        file: That path as ``champions.json`` gives it (relative to the run folder).
    """

    index: int
    name: str
    confidence: float
    log_prob: float
    generation: int
    source: Path
    file: str


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
    log_damaged: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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


def _champion(folder: RunFolder, entry: object, class_names: list[str]) -> Champion:
    """One validated ``champions.json`` entry (its file a regular file inside the run folder)."""
    where = folder.path / CHAMPIONS
    try:
        index = int(entry["class"])
        file = str(entry["file"])
        champion = Champion(index=index, name=str(entry.get("name", class_names[index])),
                            confidence=float(entry["confidence"]),
                            log_prob=float(entry.get("log_prob", math.log(max(float(entry["confidence"]), 1e-300)))),
                            generation=int(entry["generation"]), source=folder.path / file, file=file)
    except (KeyError, TypeError, ValueError, IndexError):
        raise EvofoolError(f"{where} is damaged (bad champion entry {str(entry)[:80]})") from None
    if not 0 <= index < len(class_names):
        raise EvofoolError(f"{where} is damaged (class {index} outside 0..{len(class_names) - 1})")
    try:
        folder.champion_path(file)  # inside the folder, no link on the way, a regular file
    except FileNotFoundError:
        raise EvofoolError(f"{champion.source} is missing (listed in {where})") from None
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
    data = folder.read_champions()
    entries = data.get("champions") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise EvofoolError(f"{folder.path / CHAMPIONS} is damaged (no champions list)")
    champions = sorted((_champion(folder, e, class_names) for e in entries), key=lambda c: c.index)
    if not champions:
        raise EvofoolError(f"{folder.path / CHAMPIONS} lists no champions yet")
    if len({c.index for c in champions}) != len(champions):
        raise EvofoolError(f"{folder.path / CHAMPIONS} is damaged (a class is listed twice)")
    log = folder.scan_log()
    return RunData(folder=folder, config=dict(doc["config"]), config_hash=str(doc.get("config_hash", "")),
                   version=str(doc.get("evofool_version", "")), class_names=class_names,
                   champions=champions, log=log.records, summary=_read_summary(folder),
                   log_damaged=log.damaged_inside)


def select(run: RunData, classes: str | list | None = None, top: int | None = None) -> list[Champion]:
    """The champions an export shows, in the order it shows them.

    Args:
        run: The run.
        classes: ``"3,5,seven"`` (indices or names) or a list of them; ``None``: all.
        top: Keep only the ``top`` most confident (sorted by confidence, best first).

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
        chosen = sorted(chosen, key=lambda c: (-c.log_prob, c.index))[:top]
    return chosen


def _class_index(token: str, class_names: list[str]) -> int:
    """A class given by name (exact, then case-insensitive) or index."""
    if token in class_names:
        return class_names.index(token)
    lowered = [n.lower() for n in class_names]
    if token.lower() in lowered:
        return lowered.index(token.lower())
    if token.isdigit() and int(token) < len(class_names):
        return int(token)
    raise EvofoolError(f"unknown class {token!r} (give indices 0..{len(class_names) - 1} or class names)")
