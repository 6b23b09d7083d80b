"""Checking values: the machinery every input of evofool passes once, low in the layers.

``Param`` declares how one value is checked (kind, range, choices...), ``check_known``
refuses unknown keys, and the small-file readers guard sidecars and ``run.toml`` files.
``RunConfig`` (``evofool.config``), the encodings' ``PARAMS`` tables and the model
loaders' sidecars all use them; this module imports nothing of evofool but its errors,
so a model loader can check its sidecar without importing the engine.
"""

from __future__ import annotations

import json
import math
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evofool.errors import EvofoolError

# An integer with no declared upper bound must fit an int64: generation counters, archive
# tensors and checkpoints hold them.
INT64_MAX = 2**63 - 1
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


NO_LEGACY = object()  # ``Param.legacy`` unset: a field that every recorded config has


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
        legacy: For a field added after runs were first recorded: what a stored config
            without it means (what evofool did before the field existed), so that an old
            run resumes as it ran. Unset: the default.
        inert: For one of a set of values (an encoding's parameters): given all of them,
            the setting under which this one computes nothing (e.g. ``crossover_rate=0``),
            or None where it counts. A run given such a value names it in a note line.
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
    legacy: Any = NO_LEGACY
    inert: Callable[[dict], str | None] | None = None
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



# --- small files ---------------------------------------------------------------------------

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


__all__ = ["CLASS_NAMES", "ConfigError", "INT64_MAX", "MAX_CLASSES", "MAX_SMALL_FILE_BYTES", "NO_LEGACY",
           "Param", "check_known", "read_json_object", "read_small_text"]
