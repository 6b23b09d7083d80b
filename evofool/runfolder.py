"""The run folder: config, per-generation log, champions, checkpoints, gallery.

Layout of ``runs/NAME/``::

    config.json                   resolved RunConfig + its hash + evofool version + class names
    log.jsonl                     one JSON record per generation
    champions/NNNN-name.png       each class's champion image, native resolution
    champions.json                per class: name, confidence, log-prob, generation found, file, its sha256
    summary.json                  where the run stands: generations, when targets were reached
    checkpoint.safetensors        latest checkpoint (+ checkpoint.prev.safetensors)
    gallery/                      written by ``evofool export`` (refreshed during runs)
    .lock                         flock of the one writer (run/resume), holding its pid while it runs

Everything here is written through ``evofool.safefs``: new regular files renamed into place,
never through a link; what is read back must be a regular file of bounded size.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evofool import __version__, checkpoint, safefs
from evofool.config import RunConfig
from evofool.errors import EvofoolError
from evofool.imageio import to_pil
from evofool.models.outputs import LOG_PROB, PROB_FLOOR, SCORE

CONFIG = "config.json"
LOG = "log.jsonl"
CHAMPIONS_DIR = "champions"
CHAMPIONS = "champions.json"
SUMMARY = "summary.json"
# What a champions.json entry reports: a probability run's confidence, a unit run's activation.
CONFIDENCE = "confidence"
ACTIVATION = "activation"


def slug(name: str, limit: int = 40) -> str:
    """A filesystem-safe version of a class or model name (``"great white shark"`` → ``great-white-shark``)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return s[:limit].rstrip("-") or "class"


def champion_filename(index: int, name: str, width: int = 4) -> str:
    """``0003-three.png``: class index first so files sort in class order."""
    return f"{index:0{width}d}-{slug(name)}.png"


def champions_fitness_kind(doc: dict) -> str:
    """``log_prob`` or ``score``: what the values of a ``champions.json`` document are.

    A document written before it recorded its kind is a probability run's, unless it is a
    unit run's: those wrote each activation as both ``confidence`` and ``log_prob``, while
    for a probability ``confidence = exp(log_prob)``, which is never equal to it.
    """
    kind = doc.get("fitness_kind")
    if kind in (LOG_PROB, SCORE):
        return kind
    entries = [e for e in doc.get("champions") or [] if isinstance(e, dict)]
    if entries and all("log_prob" in e and e.get("log_prob") == e.get(CONFIDENCE) for e in entries):
        return SCORE
    return LOG_PROB


def champion_fitness(entry: dict, fitness_kind: str) -> float:
    """A ``champions.json`` entry's fitness: its activation, or its log-probability (from
    its confidence in files written before ``log_prob`` was recorded).

    Raises:
        KeyError, TypeError, ValueError: a damaged entry.
    """
    if fitness_kind == SCORE:
        return float(entry[ACTIVATION] if ACTIVATION in entry else entry[CONFIDENCE])  # older unit runs
    if "log_prob" in entry:
        return float(entry["log_prob"])
    return math.log(max(float(entry[CONFIDENCE]), PROB_FLOOR))


def write_json_atomic(path: Path, data) -> None:
    """Writes JSON via a new temp file + rename (never through a link), so readers never see half a file."""
    safefs.write_json_atomic(path, data)


@dataclass
class LogScan:
    """What ``log.jsonl`` holds.

    Attributes:
        records: The per-generation records, in file order.
        damaged: 1-based numbers of the lines that are not a record (not JSON, torn...).
        ends: Byte offset just after each record's line (``ends[i]`` for ``records[i]``).
        damage_at: Byte offset where the first damaged line starts (``None``: none).
        torn: Whether the last line has no newline (also in ``damaged``): a process died
            writing it, or a reader looked while the run was appending it.
    """

    records: list[dict] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    damage_at: int | None = None
    torn: bool = False

    @property
    def damaged_inside(self) -> list[int]:
        """The damaged lines except a torn last one."""
        return self.damaged[:-1] if self.torn else self.damaged


# What a record's known fields hold (runs and ascent write them; other fields are free):
# counts are integers >= 0, statistics finite numbers. An edited line holding NaN, a string
# or a negative count is damaged like a torn one, so no reader (plots, resume) takes it.
LOG_COUNTS = ("generation", "evaluations", "improved", "n99", "n9999")
LOG_VALUES = ("min", "q1", "median", "q3", "max", "evals_per_s", "seconds")


def _as_record(line: bytes) -> dict | None:
    """A log line's record, or ``None`` when it is damaged (not JSON, not a record, no
    newline, a known field of the wrong kind)."""
    if not line.endswith(b"\n"):
        return None  # torn: the process died in the middle of writing it
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("generation"), int):
        return None
    for key in LOG_COUNTS:
        if key in record and not (type(record[key]) is int and record[key] >= 0):
            return None
    for key in LOG_VALUES:
        value = record.get(key, 0.0)
        if type(value) not in (int, float) or not math.isfinite(value):
            return None
    return record


def _lines(data: bytes) -> list[bytes]:
    """The lines of ``data``, each with its ``\\n`` (the last one without, when torn)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def scan_log(data: bytes) -> LogScan:
    """Splits log bytes into records and damaged lines (blank lines are neither)."""
    scan, offset = LogScan(), 0
    for number, line in enumerate(_lines(data), 1):
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        record = _as_record(line)
        if record is None:
            scan.damaged.append(number)
            scan.damage_at = start if scan.damage_at is None else scan.damage_at
        else:
            scan.records.append(record)
            scan.ends.append(offset)
    scan.torn = bool(data) and not data.endswith(b"\n") and bool(data.rsplit(b"\n", 1)[-1].strip())
    return scan


class LogDamaged(EvofoolError):
    """The log is damaged (or too short) inside the part a checkpoint covers.

    Attributes:
        at: Byte offset of the damage (or the log's length, when it is too short).
    """

    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.at = at


class RunFolder:
    """A run's folder on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: safefs.FolderLock | None = None
        # Per class, the champion whose PNG is on disk: (generation, fitness, sha256), so a
        # checkpoint re-writes only the PNGs of champions that changed (write_champions).
        self._on_disk: dict[int, tuple[int, float, str]] | None = None

    # --- creation / opening ------------------------------------------------------------------
    @staticmethod
    def default_path(config: RunConfig, root: str | Path = "runs") -> Path:
        """``runs/<model>-<encoding>-seed<S>``, with ``-2``, ``-3``... when that is taken."""
        base = Path(root) / f"{slug(config.model)}-{config.encoding}-seed{config.seed}"
        path, n = base, 1
        while path.exists() and any(path.iterdir()):
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    @staticmethod
    def _refuse_unless_empty(path: Path) -> None:
        """Refuses a folder that holds anything but an evofool lock file (left by a crash)."""
        if path.is_dir() and any(p.name != safefs.LOCK or not safefs.is_lock_file(p) for p in path.iterdir()):
            if (path / CONFIG).exists() or (path / CONFIG).is_symlink():
                raise EvofoolError(f"{path} already holds a run; continue it with "
                                   f"'evofool resume {path}' or choose another --out")
            raise EvofoolError(f"{path} is not empty; choose another --out")

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, class_names: list[str],
               extra: dict | None = None, keep_lock: bool = False,
               files: dict[str, bytes] | None = None) -> "RunFolder":
        """Makes a new run folder; refuses one that already holds anything.

        ``extra`` adds entries to ``config.json`` (e.g. the encoding's resolved parameters).
        ``files`` are written into the new folder first (name → bytes; e.g. the TorchScript
        copy of an in-memory model that ``evofool.evolve`` saves so the run can be resumed).
        The folder is locked while it is made; ``keep_lock`` keeps it locked for the
        caller (a job), until ``release()``.

        Raises:
            EvofoolError: when ``path`` is a file, holds a run, is not empty, or is in use.
        """
        path = safefs.landing(path)
        if path.exists() and not path.is_dir():
            raise EvofoolError(f"{path} exists and is not a folder")
        cls._refuse_unless_empty(path)  # before the lock file is made: a foreign folder stays untouched
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path)
        folder.acquire()
        try:
            cls._refuse_unless_empty(path)  # again under the lock: another `run --out` may have won
            for name, data in (files or {}).items():
                safefs.write_bytes_atomic(path / name, data, root=path)
            folder.write_config_doc({"evofool_version": __version__, "config_hash": config.hash(),
                                     "config": config.to_dict(), "class_names": list(class_names),
                                     **(extra or {})})
            safefs.open_append_nofollow(path / LOG).close()
        except BaseException:
            folder.release()
            raise
        if not keep_lock:
            folder.release()
        return folder

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """Opens an existing run folder.

        Raises:
            EvofoolError: when ``path`` is not a run folder.
        """
        path = Path(path)
        try:
            found = path.is_dir() and safefs.check_regular(path / CONFIG) is not None
        except OSError:
            found = False
        if not found:
            raise EvofoolError(f"{path} is not an evofool run folder (no {CONFIG})")
        return cls(path)

    # --- the one writer ----------------------------------------------------------------------
    def acquire(self) -> None:
        """Locks the folder for this process (see ``safefs.lock_folder``).

        Raises:
            EvofoolError: "run folder X is in use by process N".
        """
        if self._lock is None or not self._lock.held:
            self._lock = safefs.lock_folder(self.path)

    def check_held(self) -> None:
        """Raises ``EvofoolError`` if the folder this process locked was removed or replaced
        (``safefs.FolderLock.check``); a no-op when it holds no lock."""
        if self._lock is not None:
            self._lock.check()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check_writable(self, class_names: list[str]) -> None:
        """Refuses, before any work is done, a folder where something evofool will write (or its
        temp file) is a link, a FIFO or a folder, or where ``champions/`` is not a real folder.

        (Every write checks again; this makes a planted link fail before a generation runs, with
        nothing in the folder changed.)

        Raises:
            EvofoolError: naming the first such path.
        """
        names = [CONFIG, LOG, CHAMPIONS, SUMMARY, checkpoint.CURRENT, checkpoint.PREVIOUS, safefs.LOCK]
        if safefs.check_folder(self.path / CHAMPIONS_DIR, self.path):
            width = max(4, len(str(len(class_names) - 1)))
            names += [f"{CHAMPIONS_DIR}/{champion_filename(k, name, width)}" for k, name in enumerate(class_names)]
        for name in names:
            for candidate in (name, name + ".tmp"):
                safefs.check_regular(self.path / candidate, self.path)

    # --- reading -----------------------------------------------------------------------------
    def read_json(self, name: str, limit: int = safefs.JSON_LIMIT):
        """A JSON file of the folder (bounded, never through a link); ``ValueError`` if it does not parse."""
        return safefs.read_json(self.path / name, limit, root=self.path)

    def read_config_doc(self) -> dict:
        try:
            doc = self.read_json(CONFIG)
            RunConfig.from_record(doc["config"], source=self.path / CONFIG)
            return doc
        except FileNotFoundError:
            raise EvofoolError(f"{self.path} is not an evofool run folder (no {CONFIG})") from None
        except (ValueError, KeyError, TypeError):
            raise EvofoolError(f"{self.path / CONFIG} is damaged or not an evofool config") from None

    def write_config_doc(self, doc: dict) -> None:
        safefs.write_json_atomic(self.path / CONFIG, doc, root=self.path)

    def config(self) -> RunConfig:
        return RunConfig.from_record(self.read_config_doc()["config"], source=self.path / CONFIG)

    def class_names(self) -> list[str]:
        return list(self.read_config_doc()["class_names"])

    # --- log ---------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.path / LOG

    def log_bytes(self) -> int:
        st = safefs.check_regular(self.log_path, self.path)
        return st.st_size if st is not None else 0

    def open_log(self):
        """The log, opened for appending bytes, unbuffered (never through a link)."""
        return safefs.open_append_nofollow(self.log_path, self.path)

    def read_log_bytes(self) -> bytes:
        try:
            return safefs.read_bounded(self.log_path, safefs.LOG_LIMIT, self.path)
        except FileNotFoundError:
            return b""

    def scan_log(self) -> LogScan:
        return scan_log(self.read_log_bytes())

    def read_log(self) -> list[dict]:
        """The records of ``log.jsonl``; damaged lines (see ``scan_log``) are skipped."""
        return self.scan_log().records

    def repair_log(self, size: int, generations: int) -> str | None:
        """Cuts the log back to the ``size`` bytes its checkpoint covers, after checking them.

        The records after ``size`` are re-run on resume, so damage there (a torn last line,
        a garbled record) is cut with them. The first ``size`` bytes must be exactly the
        records of generations 1..``generations``.

        Returns:
            A warning when what was cut held damaged lines, else ``None``.

        Raises:
            LogDamaged: the log is shorter than ``size`` or damaged before it.
        """
        data = self.read_log_bytes()
        if len(data) < size:
            raise LogDamaged(f"{self.log_path} is shorter ({len(data)} bytes) than its checkpoint says "
                             f"({size} bytes); the log was damaged", at=len(data))
        covered, rest = scan_log(data[:size]), scan_log(data[size:])
        problem = _coverage_problem(covered, size, generations)
        if problem is not None:
            line, at = problem
            raise LogDamaged(f"{self.log_path} is damaged at {line}, inside the {size} bytes "
                             f"(generations 1..{generations}) its checkpoint covers", at=at)
        if len(data) > size:
            safefs.truncate_nofollow(self.log_path, size, self.path)
        if rest.damaged:
            return (f"{self.log_path}: {len(rest.damaged)} damaged line(s) after the checkpoint's "
                    f"generation {generations} were cut with the records after it (they are re-run)")
        return None

    # --- champions -----------------------------------------------------------------------------
    def write_champions(self, images: np.ndarray, confidences: np.ndarray, fitness: np.ndarray,
                        generations: np.ndarray, class_names: list[str], fitness_kind: str = LOG_PROB) -> None:
        """Writes the PNG of each filled class's champion that changed, then ``champions.json``.

        Each entry records the sha256 of its PNG's bytes, so a reader of a folder whose run
        is going on can tell a PNG already re-written for the next checkpoint from the one
        the entry describes (``read_champion_files``). A champion that is still the one
        whose PNG is on disk (same generation and fitness: a new champion always beats the
        old one) is not encoded again: PNG-encoding 1,000 ImageNet champions took 6 s at
        each checkpoint (AMD EPYC Zen 4, 1 thread beside a 2-thread run), about a quarter
        of a 25-generation checkpoint interval of an ImageNet CPPN run.

        Args:
            images: ``K×C×H×W`` uint8 champions.
            confidences: What is reported per class (``ClassArchive.confidences``): for
                ``log_prob`` runs the probability; ignored for ``score`` runs (the score is
                ``fitness`` itself).
            fitness: Per class: the log-probability, or the raw score (``-inf``: empty).
            generations: Per class: the generation its champion was found.
            class_names: The model's class names.
            fitness_kind: ``log_prob`` (entries hold ``confidence`` and ``log_prob``) or
                ``score`` (entries hold ``activation``).

        Raises:
            EvofoolError: ``champions/`` or a file in it is a link or not a regular file.
            OSError: a write failed (disk full); no temp file is left.
        """
        out = safefs.make_dir(self.path / CHAMPIONS_DIR, self.path)
        if self._on_disk is None:
            self._on_disk = self._champions_on_disk()
        width = max(4, len(str(len(class_names) - 1)))
        entries = []
        for k, name in enumerate(class_names):
            if not np.isfinite(fitness[k]):
                continue
            fname = champion_filename(k, name, width)
            key = (int(generations[k]), float(fitness[k]))
            known = self._on_disk.get(k)
            # check_regular: absent, or a regular file (a link planted there is refused, as
            # writing over it would be)
            if known is None or known[:2] != key or safefs.check_regular(out / fname, self.path) is None:
                data = safefs.png_bytes(to_pil(images[k]))
                # Not fsynced: the checkpoint is what a crash must not lose.
                safefs.write_bytes_atomic(out / fname, data, root=self.path, durable=False)
                known = self._on_disk[k] = (*key, hashlib.sha256(data).hexdigest())
            values = ({ACTIVATION: float(fitness[k])} if fitness_kind == SCORE
                      else {CONFIDENCE: float(confidences[k]), "log_prob": float(fitness[k])})
            entries.append({"class": k, "name": name, **values, "generation": int(generations[k]),
                            "file": f"{CHAMPIONS_DIR}/{fname}", "sha256": known[2]})
        safefs.write_json_atomic(self.path / CHAMPIONS, {"num_classes": len(class_names),
                                                         "fitness_kind": fitness_kind, "champions": entries},
                                 root=self.path)

    def _champions_on_disk(self) -> dict[int, tuple[int, float, str]]:
        """What an earlier process wrote (a resumed run): the champions ``champions.json``
        lists whose PNG on disk still has the recorded sha256; nothing where it is absent,
        damaged or from before digests were recorded."""
        try:
            doc = self.read_json(CHAMPIONS)
            kind = champions_fitness_kind(doc)
            found = {}
            for entry in doc["champions"]:
                data = safefs.read_bounded(self.path / str(entry["file"]), safefs.PNG_LIMIT, self.path)
                if hashlib.sha256(data).hexdigest() == entry.get("sha256"):
                    found[int(entry["class"])] = (int(entry["generation"]), champion_fitness(entry, kind),
                                                  str(entry["sha256"]))
            return found
        except (OSError, ValueError, KeyError, TypeError, EvofoolError):
            return {}

    def read_champion_files(self, attempts: int = 50, pause: float = 0.2) -> tuple[dict, dict[str, bytes]]:
        """``champions.json`` and the bytes of each PNG it lists, as one checkpoint wrote them.

        A run going on re-writes PNGs before its next ``champions.json``: a PNG whose bytes
        do not have its entry's sha256 is from a later checkpoint, so everything is read
        again (up to ``attempts`` times, ``pause`` seconds apart). Entries without a digest
        (runs written before them) are taken as they are; a listed file that is missing is
        left out (callers name it).

        Raises:
            EvofoolError: ``champions.json`` is absent or damaged, a file is a link or leaves
                the folder, or the run kept changing the champions while they were read.
        """
        for attempt in range(attempts):
            doc = self.read_champions()
            entries = doc.get("champions") if isinstance(doc, dict) else None
            files: dict[str, bytes] = {}
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                    continue  # callers report damaged entries
                try:
                    data = safefs.read_bounded(self.champion_path(entry["file"]), safefs.PNG_LIMIT, self.path)
                except FileNotFoundError:
                    continue
                digest = entry.get("sha256")
                if digest is not None and hashlib.sha256(data).hexdigest() != digest and safefs.held_by_another_process(self.path):
                    break  # a newer champion: read champions.json again
                files[entry["file"]] = data  # (with no run going on, a changed file is what there is)
            else:
                return doc, files
            time.sleep(pause)
        raise EvofoolError(f"the champions of {self.path} changed each of the {attempts} times they were read "
                           f"(its run is writing them); try again")

    def read_champions(self) -> dict:
        try:
            return self.read_json(CHAMPIONS)
        except FileNotFoundError:
            raise EvofoolError(f"{self.path} has no {CHAMPIONS} yet (no generation finished?)") from None
        except ValueError:
            raise EvofoolError(f"{self.path / CHAMPIONS} is damaged") from None

    def champion_path(self, rel: object) -> Path:
        """The champion PNG a ``champions.json`` entry names: inside the folder, a regular file.

        Raises:
            EvofoolError: a path that leaves the folder, goes through a link, or is not a regular file.
            FileNotFoundError: no such file.
        """
        path = safefs.inside(self.path, str(rel), what=f"champion file (in {self.path / CHAMPIONS})")
        if safefs.check_regular(path, self.path) is None:
            raise FileNotFoundError(str(path))
        return path

    def write_summary(self, summary: dict) -> None:
        safefs.write_json_atomic(self.path / SUMMARY, summary, root=self.path)


def _coverage_problem(scan: LogScan, size: int, generations: int) -> tuple[str, int] | None:
    """Where the log part a checkpoint covers is not exactly generations 1..``generations``."""
    if scan.damaged:
        return f"line {scan.damaged[0]}", scan.damage_at
    for i, record in enumerate(scan.records):
        if record["generation"] != i + 1:
            return f"line {i + 1} (generation {record['generation']}, expected {i + 1})", \
                (scan.ends[i - 1] if i else 0)
    if len(scan.records) != generations:
        return f"its end ({len(scan.records)} records for {generations} generations)", size
    return None
