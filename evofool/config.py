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
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from evofool.crops import CROP_CHOICES
from evofool.encodings import ENCODINGS, RECORDED_ENCODINGS, check_params, encoding_class
from evofool.emitters import FIRST_REFINE_LR, REFINE_STEPS, parse_lengths
from evofool.engine import SELECTIONS
from evofool.errors import EvofoolError
from evofool.evaluator import PRECISIONS
from evofool.recombination import parse_scales
from evofool.runtime import LEGACY_RUNTIME, RUNTIMES
# The value-checking machinery lives low in the layers (models and encodings use it); re-exported here.
from evofool.values import (CLASS_NAMES, NO_LEGACY, ConfigError, Param, check_known,  # noqa: F401
                            read_json_object, read_small_text)

# Keys that change what a run computes: a resume must not change them.
MEANING_KEYS = ("model", "encoding", "encoding_params", "population", "seed", "crops", "selection",
                "focus_below", "recombine", "extrapolate", "weight_steps", "refine", "refine_share", "refine_steps",
                "refine_lr", "refine_adapt", "refine_balance")
# Meaning keys added after runs were first recorded: they enter the hash only when they differ
# from this value (what every earlier run computed), so the folders of earlier runs keep theirs.
LATER_MEANING_DEFAULTS = {"extrapolate": "off", "weight_steps": 0.0, "refine": "off", "refine_share": 0.1,
                          "refine_steps": REFINE_STEPS, "refine_lr": FIRST_REFINE_LR,
                          "refine_adapt": "off", "refine_balance": "off"}
# Keys that mean something only for --refine grad: a black-box run's hash never holds them.
REFINE_ONLY_KEYS = ("refine_lr", "refine_adapt", "refine_balance")
# Every key that computes nothing without --refine grad (refine_share and refine_steps enter a
# black-box run's hash where they differ from their defaults, as they always have: not above).
REFINE_OPTION_KEYS = ("refine_share", "refine_steps", *REFINE_ONLY_KEYS)
# --refine: off (black-box: forward passes only), or grad (GradientRefineEmitter).
REFINES = ("off", "grad")
# --refine-adapt: off (every cell steps at refine_lr), or on (a step per cell, 1/5 success rule).
REFINE_ADAPTS = ("off", "on")
# --refine-balance: off (a fixed --refine-share), or on (the share follows gain per evaluation).
REFINE_BALANCES = ("off", "on")

# numpy's default_rng takes any seed >= 0, torch.manual_seed any seed < 2**64: both hold here.
SEED_LIMIT = 2**64
# Far above any useful MAP-Elites batch (the paper's were a few hundred images);
# check_batch_memory bounds it further by the memory at hand.
MAX_POPULATION = 1_000_000
# Ray workers beyond this are a typo, not a cluster.
MAX_WORKERS = 4096
# Threads beyond this are a typo, not a machine.
MAX_THREADS = 4096



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
        runtime: What scores the images (``evofool.scoring``): ``auto`` (ONNX Runtime on the
            CPU where its export agrees with torch, else torch), ``torch`` or
            ``onnxruntime``. A run records the runtime ``auto`` resolved to, so its resume
            and its Ray workers score alike; a config without it (recorded before runtimes
            existed) means torch. Not a meaning key: like ``device`` and ``precision`` it
            changes scores in the last bits only, and hashes of existing runs stay.
        threads: Torch and ONNX Runtime intra-op threads of this process (0: all the CPUs
            it may use, or ``OMP_NUM_THREADS`` when set). Several runs on one machine:
            ``--threads 1`` each.
        checkpoint_every: Generations between checkpoints (0: only at the end).
        stop_at: Stop early once every class reaches this confidence (``None``: never).
        crops: 1, or 10 for the original's 10-crop scoring (photo models).
        selection: Parent choice: ``lagging`` (default: 3/4 uniform over classes still
            below ``focus_below``, 1/4 over all) or ``uniform`` (the paper's MAP-Elites).
        focus_below: Confidence under which a class counts as lagging.
        recombine: Step recombination (``evofool.recombination``): ``auto`` (on, lengths
            2,4,8,16, where the encoding's genomes are vectors: direct), ``off``, or step
            lengths as ``"2,4,8"`` / a list.
        extrapolate: ``off`` (default), ``on`` (lengths 0.5,1,2) or step lengths: after each
            generation, for each cell a child that differs from its parent only in its
            weights took, candidates that go on along the child's step by those multiples
            of it (``evofool.emitters.ExtrapolationEmitter``; cppn only; black-box).
        weight_steps: Share of each generation given to per-cell Gaussian steps on a
            champion's weights, with their step sizes adapted by the 1/5 success rule
            (``evofool.emitters.WeightStepEmitter``; cppn only); 0: none.
        refine: ``off`` (black-box), or ``grad``: a share ``refine_share`` of each
            generation is champions whose weights (CPPN links, or pixels) took ``refine_steps`` gradient steps
            up their class's log-probability through the differentiable renderer and the
            torch model (``evofool.emitters.GradientRefineEmitter``; not black-box; each
            forward + backward pass counts as 3 evaluations).
        refine_share: Share of each generation ``--refine grad`` takes.
        refine_steps: Gradient steps per refined child.
        refine_lr: Adam's learning rate on the weights; ``None``: the encoding's own
            (``default_refine_lr`` of its class), which a new run records. Runs recorded before
            this key stepped with ``FIRST_REFINE_LR``.
        refine_adapt: ``on`` (default): each cell keeps its own refine step, adapted by the
            1/5 success rule between a tenth of ``refine_lr`` and ``refine_lr``; ``off``: every
            cell steps at ``refine_lr`` (what runs recorded before this key did).
        refine_balance: ``off`` (default): refined children take ``refine_share`` of each
            generation; ``on``: that share is where they start, and each generation it moves
            (x1.1 or /1.1, between 1 % and 90 %) towards the side of the batch, refined
            children or the rest, whose archive gain per evaluation is higher on average.
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
    runtime: str = setting(str, "auto", choices=RUNTIMES, legacy=LEGACY_RUNTIME)
    threads: int = setting(int, 0, low=0, high=MAX_THREADS)
    checkpoint_every: int = setting(int, 25, low=0)
    stop_at: float | None = setting(float, None, low=0.0, high=1.0, low_open=True, optional=True)
    crops: int = setting(int, 1, choices=CROP_CHOICES)
    selection: str = setting(str, "lagging", choices=SELECTIONS)
    focus_below: float = setting(float, 0.9999, low=0.0, high=1.0, low_open=True)
    recombine: str | list = setting((str, list), "auto", test=parse_scales)
    extrapolate: str | list = setting((str, list), "off", test=parse_lengths, legacy="off")
    weight_steps: float = setting(float, 0.0, low=0.0, high=0.9, legacy=0.0)
    refine: str = setting(str, "off", choices=REFINES, legacy="off")
    refine_share: float = setting(float, 0.1, low=0.0, high=0.9, low_open=True, legacy=0.1)
    refine_steps: int = setting(int, REFINE_STEPS, low=1, high=1000, legacy=REFINE_STEPS)
    refine_lr: float | None = setting(float, None, low=0.0, high=10.0, low_open=True, optional=True,
                                      legacy=FIRST_REFINE_LR)
    refine_adapt: str = setting(str, "on", choices=REFINE_ADAPTS, legacy="off")
    refine_balance: str = setting(str, "off", choices=REFINE_BALANCES, legacy="off")
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
            data: Field name -> value. A missing field takes its ``legacy`` value where it
                declares one (``runtime``: a config recorded before the field existed),
                else its default.
            source: The file ``data`` came from, named in every error.

        Raises:
            TypeError: ``data`` is not a dict.
            ConfigError: an unknown key or a value its field does not allow.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a run config is a dict of settings, not {type(data).__name__}")
        params = cls.params()
        check_known(data, params, "config key", _where(source))
        predating = {k: p.legacy for k, p in params.items() if k not in data and p.legacy is not NO_LEGACY}
        return cls(**predating, **data).validate(source)

    @classmethod
    def from_record(cls, data: dict, source: str | Path | None = None) -> "RunConfig":
        """``from_dict`` for a config a run folder recorded: encoding parameters recorded before
        their default changed take their legacy value (``Encoding.recorded_params``)."""
        if isinstance(data, dict) and isinstance(data.get("encoding_params"), dict) \
                and data.get("encoding") in ENCODINGS:
            data = {**data, "encoding_params": encoding_class(data["encoding"]).recorded_params(
                data["encoding_params"])}
        return cls.from_dict(data, source)

    def for_new_run(self) -> "RunConfig":
        """This config as a new run records it: encoding parameters whose default changed
        after runs were first recorded are written out (``Encoding.params_to_record``), and
        the refine learning rate resolved (``resolved_refine_lr``)."""
        if self.encoding not in ENCODINGS:
            return self
        return replace(self, encoding_params=encoding_class(self.encoding).params_to_record(self.encoding_params),
                       refine_lr=self.resolved_refine_lr())

    def resolved_refine_lr(self) -> float | None:
        """``refine_lr``, or where it is ``None`` the encoding's own (``default_refine_lr`` of
        its class for the run's encoding parameters: a step that suits its weights' scale)."""
        if self.refine_lr is not None or self.encoding not in ENCODINGS:
            return self.refine_lr
        return float(encoding_class(self.encoding).default_refine_lr(self.encoding_params))

    def meaning(self) -> dict:
        """The part of the config that defines what the run computes."""
        d = {**self.to_dict(), "refine_lr": self.resolved_refine_lr()}
        if self.encoding in ENCODINGS:
            # An encoding parameter at its legacy value is what earlier runs computed without
            # recording it: left out, so their hash stays theirs.
            legacy = encoding_class(self.encoding).legacy_params()
            # A parameter of --refine grad (cppn's refine_links) computes nothing in a black-box run.
            refine_only = () if d["refine"] == "grad" else encoding_class(self.encoding).REFINE_ONLY_PARAMS
            d["encoding_params"] = {k: v for k, v in d["encoding_params"].items()
                                    if not (k in legacy and v == legacy[k]) and k not in refine_only}
        return {k: d[k] for k in MEANING_KEYS
                if not (k in LATER_MEANING_DEFAULTS and d[k] == LATER_MEANING_DEFAULTS[k])
                and not (k in REFINE_ONLY_KEYS and d["refine"] != "grad")}

    def hash(self) -> str:
        """sha256 of the canonical JSON of ``meaning()`` (first 16 hex digits)."""
        blob = json.dumps(self.meaning(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differing_keys(self, other: "RunConfig") -> list[str]:
        """Meaning keys whose values differ between two configs."""
        a, b = self.meaning(), other.meaning()
        return [k for k in MEANING_KEYS if a.get(k, LATER_MEANING_DEFAULTS.get(k)) != b.get(k, LATER_MEANING_DEFAULTS.get(k))]


# --- files ---------------------------------------------------------------------------------

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


def batch_bytes(population: int, input_shape: tuple[int, ...], num_classes: int, max_batch: int,
                forward_images: int | None = None) -> int:
    """About how many bytes one generation holds at its peak, archive included.

    ``forward_images``: the images one forward pass holds at once (the evaluator pads the
    last chunk to its fixed size, so 2 images of a photo model still take a chunk of 50);
    default ``min(population, max_batch)``.
    """
    values = math.prod(int(s) for s in input_shape)
    chunk = _forward_images(population, max_batch, forward_images)
    archive = 2 * num_classes * values + 4 * 8 * num_classes   # store + images, per-class scores
    return (population * (values * POPULATION_BYTES_PER_VALUE + num_classes * SCORE_BYTES_PER_CLASS)
            + chunk * values * FORWARD_BYTES_PER_VALUE + archive)


def _forward_images(population: int, max_batch: int, forward_images: int | None) -> int:
    """Images one forward pass holds: ``forward_images`` where the caller knows the chunk, else
    ``min(population, max_batch)``."""
    return min(population, max_batch) if forward_images is None else int(forward_images)


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - loop returns


def largest_population(input_shape: tuple[int, ...], num_classes: int, max_batch: int, budget: int,
                       forward_images: int | None = None) -> int:
    """The largest population whose ``batch_bytes`` fit ``budget`` (0 if none does)."""
    low, high = 0, MAX_POPULATION
    while low < high:  # batch_bytes grows with the population: bisect
        mid = (low + high + 1) // 2
        if batch_bytes(mid, input_shape, num_classes, max_batch, forward_images) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def check_batch_memory(population: int, input_shape: tuple[int, ...], num_classes: int, max_batch: int,
                       device: Any = None, available: int | None = None, forward_images: int | None = None) -> None:
    """Refuses, before anything is allocated, a population whose generation cannot fit in memory.

    Args:
        population: Offspring per generation.
        input_shape: ``(C, H, W)`` of the model's images.
        num_classes: Cells of the archive.
        max_batch: Largest forward-pass chunk.
        device: Where the run's arrays live (CUDA: GPU memory; else host memory).
        available: Bytes available (default: measured on ``device``).
        forward_images: Images one forward pass holds (see ``batch_bytes``).

    Raises:
        ConfigError: naming the estimate, the memory available and the largest population that fits.
    """
    need = batch_bytes(population, input_shape, num_classes, max_batch, forward_images)
    have = available_memory(device) if available is None else int(available)
    budget = int(have * MEMORY_SHARE)
    if need > budget:
        fits = largest_population(input_shape, num_classes, max_batch, budget, forward_images)
        shape = "×".join(str(s) for s in input_shape)
        chunk = _forward_images(population, max_batch, forward_images)
        advice = (f"use --population {fits} or less" if fits else
                  f"no population fits with {chunk} images per forward pass (--max-batch lowers it)")
        raise ConfigError(f"population {population} of {shape} images needs about {_size(need)} per "
                          f"generation, more than {MEMORY_SHARE:.0%} of the {_size(have)} of memory "
                          f"available; {advice}")
