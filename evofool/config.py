"""``RunConfig``: everything that defines a run, with its canonical hash."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from evofool.errors import EvofoolError
from evofool.recombination import parse_scales

# Keys that change what a run computes: a resume must not change them.
MEANING_KEYS = ("model", "encoding", "encoding_params", "population", "seed", "crops", "selection",
                "focus_below", "recombine")


@dataclass
class RunConfig:
    """The parameters of one evolution run.

    Attributes:
        model: Model spec (``evofool models`` lists them).
        encoding: ``direct`` or ``cppn``.
        encoding_params: Encoding parameters (e.g. ``{"eta": 15}``).
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

    model: str = "lenet-mnist"
    encoding: str = "direct"
    encoding_params: dict = field(default_factory=dict)
    population: int = 200
    generations: int = 200
    seed: int = 0
    device: str | None = None
    max_batch: int = 1024
    precision: str = "auto"
    checkpoint_every: int = 25
    stop_at: float | None = None
    crops: int = 1
    selection: str = "lagging"
    focus_below: float = 0.9999
    recombine: str | list = "auto"
    ray: str | None = None
    workers: int = 0

    def validate(self) -> "RunConfig":
        """Raises ``EvofoolError`` for values no run can use; returns self."""
        if self.population < 1:
            raise EvofoolError(f"population must be at least 1 (got {self.population})")
        if self.generations < 0:
            raise EvofoolError(f"generations must be 0 or more (got {self.generations})")
        if self.max_batch < 1:
            raise EvofoolError(f"max-batch must be at least 1 (got {self.max_batch})")
        if self.precision not in ("auto", "float32", "bfloat16", "float16"):
            raise EvofoolError(f"unknown precision {self.precision!r}; choose auto, float32, bfloat16 or float16")
        if self.checkpoint_every < 0:
            raise EvofoolError(f"checkpoint-every must be 0 or more (got {self.checkpoint_every})")
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise EvofoolError(f"stop-at must lie in (0, 1] (got {self.stop_at})")
        if self.crops not in (1, 10):
            raise EvofoolError(f"crops must be 1 or 10 (got {self.crops})")
        if self.selection not in ("uniform", "lagging"):
            raise EvofoolError(f"unknown selection {self.selection!r}; choose uniform or lagging")
        if not 0.0 < self.focus_below <= 1.0:
            raise EvofoolError(f"focus-below must lie in (0, 1] (got {self.focus_below})")
        try:
            parse_scales(self.recombine)
        except ValueError as exc:
            raise EvofoolError(str(exc)) from None
        if self.workers < 0:
            raise EvofoolError(f"workers must be 0 or more (got {self.workers})")
        if not isinstance(self.encoding_params, dict):
            raise EvofoolError("encoding_params must be a table of name = value")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Builds a config from a dict; unknown keys are an error (typos must not pass)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EvofoolError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

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


def load_toml(path: str | Path) -> dict:
    """Reads a ``run.toml``: keys as in ``RunConfig`` (dashes allowed), ``[encoding_params]`` table."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise EvofoolError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvofoolError(f"config file {path} is not valid TOML: {exc}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}
