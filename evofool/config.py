"""``RunConfig``: everything that defines a run, with its canonical hash.

Every value a run takes passes one check, declared once: each ``RunConfig`` field carries a
``Param`` (its kind, range or choices) and each encoding a ``PARAMS`` table of them.
Command-line options, ``run.toml`` files and a run folder's ``config.json`` all go through
``RunConfig.from_dict``/``validate``, so a value that one path refuses no other path accepts.
Every refusal is a one-line ``ConfigError`` (an ``EvofoolError``: ``error: ...``, exit 2).

The small-file reader and the memory estimate of a population also live here: they guard
the other inputs of a run (sidecars, the run's size) before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from evofool.crops import NUM_CROPS
from evofool.encodings import RECORDED_ENCODINGS, check_params
from evofool.engine import SELECTIONS
from evofool.errors import EvofoolError
from evofool.evaluator import PRECISIONS
from evofool.recombination import parse_scales

# Keys that change what a run computes: a resume must not change them.
MEANING_KEYS = ("model", "encoding", "encoding_params", "population", "seed", "crops", "selection",
                "focus_below", "recombine")

# An integer with no declared upper bound must fit an int64: generation counters, archive
# tensors and checkpoints hold them.
INT64_MAX = 2**63 - 1
# numpy's default_rng takes any seed >= 0, torch.manual_seed any seed < 2**64: both hold here.
SEED_LIMIT = 2**64
# Far above any useful MAP-Elites batch (the paper's were a few hundred images);
# check_batch_memory bounds it further by the memory at hand.
MAX_POPULATION = 1_000_000
# Ray workers beyond this are a typo, not a cluster.
MAX_WORKERS = 4096
# run.toml files and model sidecars are small; a larger "file" is the wrong one (or a device).
MAX_SMALL_FILE_BYTES = 4 * 2**20
# More classes than any image classifier has (ImageNet-21k has 21,841).
MAX_CLASSES = 1_000_000


class ConfigError(EvofoolError):
    """A value outside what its ``Param`` allows (or a key nothing declares)."""


# --- one value's check ---------------------------------------------------------------------

_FLOAT_MAX_INT = int(sys.float_info.max)
_KIND_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false",
               dict: "a table of name = value", list: "a list"}


def _is_kind(value: Any, kind: type) -> bool:
    """Strict kinds: bool is not an int, 2.5 and "5" are not ints, an int is a float."""
    if kind is int:
        return type(value) is int
    if kind is float:
        if type(value) is int:  # one too large for a float (10**400) is no finite number
            return abs(value) <= _FLOAT_MAX_INT
        return type(value) is float and math.isfinite(value)
    return isinstance(value, kind)


def _number(x: float) -> str:
    """A range end as written: ``0``, ``0.5``, ``1000000`` (not ``0.0`` or ``1e+06``)."""
    return str(x) if type(x) is int else f"{x:.15g}"


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to one short line (a bad value may be a huge list or string)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's int-to-text digit limit
        return "an integer of over 4300 digits"
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class Param:
    """How one value is checked, its default and what it means: declared once per value.

    Attributes:
        kind: ``int``, ``float``, ``str``, ``bool``, ``dict`` or ``list``, or a tuple of them.
            Kinds are strict: ``True``, ``2.5`` and ``"5"`` are not integers; integers are
            floats; floats must be finite.
        default: The value when none is given.
        low, high: Range ends (inclusive unless ``low_open``/``high_open``). An integer
            must fit an int64 at an end left open.
        choices: The only values allowed (an enumeration), listed in the error.
        optional: ``None`` is allowed too (meaning "not set").
        test: A further check raising ``ValueError`` with a full message (e.g. a parser).
        item: For lists: the ``Param`` every element must pass.
        length: For lists: the exact length; else ``min_length`` to ``max_length``.
        help: One line for ``--help``.
    """

    kind: type | tuple[type, ...]
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False
    test: Callable[[Any], Any] | None = None
    item: "Param | None" = None
    length: int | None = None
    min_length: int = 0
    max_length: int = 2**31
    help: str = ""

    def _kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    def _outside(self, value: int | float) -> bool:
        """``value`` lies outside the declared range."""
        return ((self.low is not None and (value <= self.low if self.low_open else value < self.low))
                or (self.high is not None and (value >= self.high if self.high_open else value > self.high)))

    def describe(self) -> str:
        """What a valid value is, e.g. ``an integer from 1 to 1000000`` or ``one of a, b``."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        text = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in self._kinds())
        if self._kinds() == (list,) and (self.length is not None or self.item is not None):
            if self.length is not None:
                text = f"a list of {self.length}"
            elif self.max_length < 2**31:
                text = f"a list of {self.min_length} to {self.max_length}"
            else:
                text = f"a list of {self.min_length} or more"
            return text + (f", each {self.item.describe()}" if self.item else "")
        low, high = (None if b is None else _number(b) for b in (self.low, self.high))
        if self._kinds() == (int,) and low is not None and high is not None:
            text += f" from {low} to {high}"
        elif low is not None and high is not None:
            text += f" in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif low is not None:
            text += f" {'>' if self.low_open else '>='} {low}"
        elif high is not None:
            text += f" {'<' if self.high_open else '<='} {high}"
        return text

    def problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not a valid ``name`` (a sentence), or None."""
        wrong = f"{name} must be {self.describe()} (got {_shown(value)})"
        if value is None and self.optional:
            return None
        if self.choices:
            # Kind first: True == 1 and 1.0 == 1, but neither is the integer 1.
            ok = any(type(value) is type(c) and value == c for c in self.choices)
            return None if ok else wrong
        if not any(_is_kind(value, k) for k in self._kinds()):
            return wrong
        if type(value) in (int, float) and self._outside(value):
            return wrong
        # Integers with an open end still fit an int64 there (counters, tensors, checkpoints).
        if self._kinds() == (int,) and ((self.high is None and value > INT64_MAX)
                                   or (self.low is None and value < -INT64_MAX - 1)):
            return f"{name} must be {self.describe()} that fits 64 bits (got {_shown(value)})"
        if isinstance(value, list) and (self.length is not None or self.item is not None):
            if self.length is not None and len(value) != self.length:
                return wrong
            if self.length is None and not self.min_length <= len(value) <= self.max_length:
                return wrong
            for i, element in enumerate(value):
                problem = self.item.problem(f"{name}[{i}]", element) if self.item else None
                if problem:
                    return problem
        if self.test is not None:
            try:
                self.test(value)
            except ValueError as exc:
                return f"{exc}"
        return None

    def check(self, name: str, value: Any, where: str = "") -> None:
        """Raises ``ConfigError`` (``{where}{name} must be ...``) unless ``value`` is valid."""
        problem = self.problem(name, value)
        if problem is not None:
            raise ConfigError(f"{where}{problem}")


def check_known(keys, valid, what: str, where: str = "") -> None:
    """Raises ``ConfigError`` naming the unknown keys and listing the valid ones."""
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise ConfigError(f"{where}unknown {what}{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}")


# --- the run's fields ------------------------------------------------------------------------

def setting(kind, default=None, *, factory: Callable[[], Any] | None = None, **check) -> Any:
    """A ``RunConfig`` field whose default and ``Param`` are declared together."""
    param = Param(kind, default if factory is None else factory(), **check)
    if factory is not None:
        return field(default_factory=factory, metadata={"param": param})
    return field(default=default, metadata={"param": param})


def _where(source: str | Path | None) -> str:
    return f"{source}: " if source is not None else ""


@dataclass
class RunConfig:
    """The parameters of one evolution run.

    Each field's kind and range are declared next to its default (``setting``) and
    checked by ``validate``.

    Attributes:
        model: Model spec (``evofool models`` lists them).
        encoding: ``direct`` or ``cppn``.
        encoding_params: Encoding parameters (e.g. ``{"eta": 15}``), checked against the
            encoding's ``PARAMS`` table.
        population: Offspring per generation (one forward pass each).
        generations: Generations to run in total (generation 1 is the random population).
        seed: Seed of the run's one random generator.
        device: ``cpu``, ``cuda``, ``cuda:1``... or ``None`` for automatic.
        max_batch: Largest forward-pass chunk (halved automatically on out-of-memory).
        precision: Forward-pass precision: ``auto`` (bfloat16 autocast on CUDA, float32 on
            CPU), ``float32``, ``bfloat16`` or ``float16``.
        checkpoint_every: Generations between checkpoints (0: only at the end).
        stop_at: Stop early once every class reaches this confidence (``None``: never).
        crops: 1, or 10 for the original's 10-crop scoring (photo models).
        selection: Parent choice: ``lagging`` (default: 3/4 uniform over classes still
            below ``focus_below``, 1/4 over all) or ``uniform`` (the paper's MAP-Elites).
        focus_below: Confidence under which a class counts as lagging.
        recombine: Step recombination (``evofool.recombination``): ``auto`` (on, lengths
            2,4,8,16, where the encoding's genomes are vectors: direct), ``off``, or step
            lengths as ``"2,4,8"`` / a list.
        ray: ``None`` (evaluate in this process), ``"auto"`` or a Ray cluster address.
        workers: Ray evaluation workers (0: one per GPU, else 2 CPU workers).
    """

    model: str = setting(str, "lenet-mnist")
    encoding: str = setting(str, "direct")
    encoding_params: dict = setting(dict, factory=dict)
    population: int = setting(int, 200, low=1, high=MAX_POPULATION)
    generations: int = setting(int, 200, low=0)
    seed: int = setting(int, 0, low=0, high=SEED_LIMIT - 1)
    device: str | None = setting(str, None, optional=True)
    max_batch: int = setting(int, 1024, low=1)
    precision: str = setting(str, "auto", choices=PRECISIONS)
    checkpoint_every: int = setting(int, 25, low=0)
    stop_at: float | None = setting(float, None, low=0.0, high=1.0, low_open=True, optional=True)
    crops: int = setting(int, 1, choices=(1, NUM_CROPS))
    selection: str = setting(str, "lagging", choices=SELECTIONS)
    focus_below: float = setting(float, 0.9999, low=0.0, high=1.0, low_open=True)
    recombine: str | list = setting((str, list), "auto", test=parse_scales)
    ray: str | None = setting(str, None, optional=True)
    workers: int = setting(int, 0, low=0, high=MAX_WORKERS)

    @classmethod
    def params(cls) -> dict[str, Param]:
        """Field name -> its ``Param``."""
        return {f.name: f.metadata["param"] for f in fields(cls)}

    @classmethod
    def check_values(cls, data: dict, source: str | Path | None = None) -> None:
        """Checks the keys and values in ``data`` (any subset of the fields), each on its own.

        ``source`` (a file) prefixes the messages, so a bad value names where it came from.
        """
        params = cls.params()
        check_known(data, params, "config key", _where(source))
        for key, value in data.items():
            # A file names the key as written there; otherwise it came from an option.
            params[key].check(key if source is not None else key.replace("_", "-"), value, _where(source))

    def validate(self, source: str | Path | None = None) -> "RunConfig":
        """Raises ``ConfigError`` for values no run can use; returns self."""
        self.check_values(self.to_dict(), source)
        self._check_encoding(source)
        return self

    def _check_encoding(self, source: str | Path | None) -> None:
        """The encoding is known and its parameters fit its ``PARAMS`` table."""
        if self.encoding in RECORDED_ENCODINGS:
            return  # written by another command (evofool ascent), whose own checks apply
        try:
            check_params(self.encoding, self.encoding_params)  # an unknown encoding lists the known ones
        except EvofoolError as exc:
            raise ConfigError(f"{_where(source)}{exc}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | Path | None = None) -> "RunConfig":
        """A validated config from a dict; unknown keys are an error (typos must not pass).

        Args:
            data: Field name -> value (missing fields take their defaults).
            source: The file ``data`` came from, named in every error.

        Raises:
            TypeError: ``data`` is not a dict.
            ConfigError: an unknown key or a value its field does not allow.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a run config is a dict of settings, not {type(data).__name__}")
        check_known(data, cls.params(), "config key", _where(source))
        return cls(**data).validate(source)

    def meaning(self) -> dict:
        """The part of the config that defines what the run computes."""
        d = self.to_dict()
        return {k: d[k] for k in MEANING_KEYS}

    def hash(self) -> str:
        """sha256 of the canonical JSON of ``meaning()`` (first 16 hex digits)."""
        blob = json.dumps(self.meaning(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differing_keys(self, other: "RunConfig") -> list[str]:
        """Meaning keys whose values differ between two configs."""
        a, b = self.meaning(), other.meaning()
        return [k for k in MEANING_KEYS if a[k] != b[k]]


# --- files ---------------------------------------------------------------------------------

def read_small_text(path: str | Path, what: str = "file", limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """The UTF-8 text of a small regular file (a run.toml, a sidecar).

    Refuses, on one line naming the file, anything else: a missing file, a folder, a FIFO
    or device (reading one would hang or never end), more than ``limit`` bytes, non-UTF-8.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise EvofoolError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise EvofoolError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise EvofoolError(f"{what} {path} is not a regular file")
    if info.st_size > limit:
        raise EvofoolError(f"{what} {path} is {info.st_size} bytes; at most {limit} are read")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise EvofoolError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:  # grew since stat
        raise EvofoolError(f"{what} {path} is over {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvofoolError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def read_json_object(path: str | Path, what: str = "sidecar") -> dict:
    """The JSON object in a small file (a model sidecar); one-line ``EvofoolError`` otherwise."""
    try:
        data = json.loads(read_small_text(path, what))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an int of 4300+ digits
        reason = exc if isinstance(exc, ValueError) else "nested too deeply"
        raise EvofoolError(f"{path} is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise EvofoolError(f"{path} must hold a JSON object")
    return data


# A model sidecar's class names (lenet, torchscript): one string per output.
CLASS_NAMES = Param(list, item=Param(str), min_length=1, max_length=MAX_CLASSES)


def load_toml(path: str | Path) -> dict:
    """Reads a ``run.toml``: keys as in ``RunConfig`` (dashes allowed), ``[encoding_params]`` table.

    Every key and value is checked here, so errors name the file; what depends on other
    settings (the encoding's parameters) is checked once the settings are merged.
    """
    text = read_small_text(path, "config file")
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, or an int of 4300+ digits
        reason = exc if isinstance(exc, ValueError) else "nested too deeply"
        raise ConfigError(f"config file {path} is not valid TOML: {reason}") from None
    values = {k.replace("-", "_"): v for k, v in data.items()}
    RunConfig.check_values(values, source=path)
    return values


# --- memory ------------------------------------------------------------------------------

# Bytes one generation costs per value (C×H×W per image) beyond the forward pass: the
# uint8 parents, children and rendered images (3 × 1 byte), and the float32 work copies of
# variation (direct crossover holds parents, mates, children and noise: 4 × 4 bytes).
POPULATION_BYTES_PER_VALUE = 3 + 4 * 4
# The forward pass of one chunk: float32 input and its preprocessed copy, plus the model's
# activations, budgeted at 8 float32 copies of the input (LeNet's conv1 output, the
# largest, is 15 of its 28×28 inputs but is freed layer by layer under inference mode).
FORWARD_BYTES_PER_VALUE = 8 * 4
# Per image and class: float64 log-probabilities, probabilities and fitness copies.
SCORE_BYTES_PER_CLASS = 4 * 8
# Use at most this share of the memory available: the rest is the model, the interpreter
# and everyone else on the machine.
MEMORY_SHARE = 0.8


def available_memory(device: Any = None) -> int:
    """Bytes free for a run's arrays: free GPU memory on CUDA, else the host's available RAM."""
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 2**63 - 1  # unknown: refuse nothing


def batch_bytes(population: int, input_shape: tuple[int, ...], num_classes: int, max_batch: int) -> int:
    """About how many bytes one generation holds at its peak, archive included."""
    values = math.prod(int(s) for s in input_shape)
    chunk = min(population, max_batch)
    archive = 2 * num_classes * values + 4 * 8 * num_classes   # store + images, per-class scores
    return (population * (values * POPULATION_BYTES_PER_VALUE + num_classes * SCORE_BYTES_PER_CLASS)
            + chunk * values * FORWARD_BYTES_PER_VALUE + archive)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - loop returns


def largest_population(input_shape: tuple[int, ...], num_classes: int, max_batch: int, budget: int) -> int:
    """The largest population whose ``batch_bytes`` fit ``budget`` (0 if none does)."""
    low, high = 0, MAX_POPULATION
    while low < high:  # batch_bytes grows with the population: bisect
        mid = (low + high + 1) // 2
        if batch_bytes(mid, input_shape, num_classes, max_batch) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def check_batch_memory(population: int, input_shape: tuple[int, ...], num_classes: int, max_batch: int,
                       device: Any = None, available: int | None = None) -> None:
    """Refuses, before anything is allocated, a population whose generation cannot fit in memory.

    Args:
        population: Offspring per generation.
        input_shape: ``(C, H, W)`` of the model's images.
        num_classes: Cells of the archive.
        max_batch: Largest forward-pass chunk.
        device: Where the run's arrays live (CUDA: GPU memory; else host memory).
        available: Bytes available (default: measured on ``device``).

    Raises:
        ConfigError: naming the estimate, the memory available and the largest population that fits.
    """
    need = batch_bytes(population, input_shape, num_classes, max_batch)
    have = available_memory(device) if available is None else int(available)
    budget = int(have * MEMORY_SHARE)
    if need > budget:
        fits = largest_population(input_shape, num_classes, max_batch, budget)
        shape = "×".join(str(s) for s in input_shape)
        advice = f"use --population {fits} or less" if fits else "no population fits"
        raise ConfigError(f"population {population} of {shape} images needs about {_size(need)} per "
                          f"generation, more than {MEMORY_SHARE:.0%} of the {_size(have)} of memory "
                          f"available; {advice}")
