"""A run as a job: build it from a config, run generations, checkpoint, resume, stop cleanly."""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import shlex
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from evofool import __version__, checkpoint, safefs
from evofool.archive import ClassArchive
from evofool.config import RunConfig
from evofool.devices import resolve_device
from evofool.encodings import encoding_class, make_encoding
from evofool.engine import THRESHOLDS, Engine
from evofool.errors import EvofoolError
from evofool.emitters import GradientRefineEmitter, LaggingSelector, extrapolation_places, parse_lengths
from evofool.evaluator import call_model, forward_chunk
from evofool.models.outputs import SCORE, fitness_from_outputs, fitness_kind
from evofool.recombination import DEFAULT_SCALES, StepRecombination, parse_scales
from evofool.runfolder import LogDamaged, RunFolder
from evofool.runtime import model_fingerprint
from evofool.values import ConfigError

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

# Called after every checkpoint with the job (its folder, config and engine: e.g. to refresh
# the live gallery, or to harvest champions).
CheckpointHook = Callable[["Job"], None]

# A unit run (``unit:`` spec, fitness kind ``score``) reports raw activations: --stop-at and
# the lagging selection's --focus-below are confidences, which it has none of.
STOP_AT_UNITS = ("--stop-at is a confidence (a probability in (0, 1]); a unit: run reports raw "
                 "activations, which have no such level: drop --stop-at")
LAGGING_UNITS_NOTE = ("note: a unit: run reports raw activations, not the confidences --focus-below "
                      "compares: parents are selected uniformly (--selection uniform)")


def run_selection(selection: str, kind: str) -> str:
    """The selection the engine of a run of fitness ``kind`` uses for the config's ``selection``:
    ``uniform`` for a ``lagging`` or ``curiosity`` unit run (their threshold is a confidence),
    else ``selection``.

    The config keeps what the user gave (its hash, and so resuming, depend on it): a resume
    maps it again, to the same engine.
    """
    return "uniform" if kind == SCORE and selection in ("lagging", "curiosity") else selection


def check_unit_config(config: RunConfig, kind: str) -> None:
    """Refuses a ``stop_at`` for a unit run (``kind == "score"``).

    Raises:
        ConfigError: ``stop_at`` set for a run that reports activations.
    """
    if kind == SCORE and config.stop_at is not None:
        raise ConfigError(STOP_AT_UNITS)


def make_recombination(recombine: str | list, encoding) -> StepRecombination | None:
    """The step recombination a config's ``recombine`` asks for (auto: where genomes are vectors)."""
    try:
        scales = parse_scales(recombine)
    except ValueError as exc:
        raise EvofoolError(str(exc)) from None
    if scales is None:
        scales = DEFAULT_SCALES if encoding.vector_genomes else ()
    elif scales and not encoding.vector_genomes:
        raise EvofoolError(f"--recombine works with vector genomes (the direct encoding); "
                           f"{encoding.name} genomes are networks: use --recombine off")
    return StepRecombination(scales) if scales else None


def build_engine(config: RunConfig, classifier=None) -> tuple[Engine, "object"]:
    """The engine (encoding, evaluator, archive, rng) a config describes, and its classifier.

    ``classifier``: an already loaded model to score instead of loading ``config.model``
    (``evofool.evolve`` with an in-memory ``nn.Module``).

    Resolves ``config.runtime`` in place (``auto`` becomes the runtime chosen here), so that
    ``Job.start`` records it and a resume or a Ray worker builds the same scoring stack.
    """
    from evofool.config import check_batch_memory
    from evofool.scoring import build_scoring, load_classifier, with_crops

    config.validate()
    device = resolve_device(config.device)
    classifier = (load_classifier(config.model, device, config.crops) if classifier is None
                  else with_crops(classifier, config.crops))
    kind = fitness_kind(classifier.outputs)
    check_unit_config(config, kind)  # before anything is exported or allocated
    if config.weight_steps and not hasattr(encoding_class(config.encoding), "step_weights"):
        raise EvofoolError(f"--weight-steps steps the weights of CPPN genomes; {config.encoding} genomes "
                           f"have none: use --encoding cppn or --weight-steps 0")
    extrapolate = parse_lengths(config.extrapolate)  # its form checked by config.validate
    if extrapolate and not hasattr(encoding_class(config.encoding), "same_graph"):
        raise EvofoolError(f"--extrapolate continues the weight steps of CPPN genomes; {config.encoding} genomes "
                           f"are not networks: use --encoding cppn or --extrapolate off")
    check_refine_config(config, classifier, kind)
    check_places(config)
    # Before anything is allocated, and so before Job.start creates a run folder.
    check_batch_memory(config.population, classifier.input_shape, classifier.num_classes,
                       config.max_batch, device, forward_images=forward_images(classifier.input_shape, device,
                                                                               config.max_batch))
    # Probed (NaN outputs, batch-1-only models) before a folder exists.
    classifier, evaluator = build_scoring(classifier, device=device, precision=config.precision,
                                          max_batch=config.max_batch, runtime=config.runtime,
                                          threads=config.threads)
    config.runtime = evaluator.runtime
    try:
        encoding = make_encoding(config.encoding, classifier.input_shape, device, **config.encoding_params)
    except ValueError as exc:
        raise EvofoolError(f"bad parameters for encoding {config.encoding!r}: {exc}") from None
    recombination = make_recombination(config.recombine, encoding)
    archive = ClassArchive(classifier.num_classes, encoding, device, fitness_kind=kind)
    selection = run_selection(config.selection, kind)
    if selection != config.selection:
        print(LAGGING_UNITS_NOTE, file=sys.stderr)
    # evofool draws only from ``rng``; the global generators are seeded too so that any
    # library code that does use them is reproducible (and their states are checkpointed).
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    scorer = None
    if config.ray not in (None, "", "off", "none"):
        try:
            from evofool.distributed import RayEvaluator
        except ImportError as exc:
            raise EvofoolError(f"--ray needs Ray: install it with pip install 'evofool[ray]' ({exc})") from None
        scorer = RayEvaluator.from_config(config, encoding, classifier)
    weight_steps, refined, extrapolated = emitter_sizes(config)
    extra = []
    if refined:
        extra.append(GradientRefineEmitter(encoding, refined, gradient_objective(classifier), config.refine_steps,
                                           lr=config.resolved_refine_lr(),
                                           selector=LaggingSelector(config.focus_below),
                                           adapt=config.refine_adapt == "on",
                                           balance=(config.population - weight_steps - extrapolated
                                                    if config.refine_balance == "on" else None)))
    return Engine(encoding, evaluator, archive, config.population, rng, scorer=scorer,
                  selection=selection, focus_below=config.focus_below,
                  recombination=recombination, extrapolate=extrapolate, weight_steps=weight_steps, extra_emitters=extra), classifier


def emitter_sizes(config: RunConfig) -> tuple[int, int, int]:
    """Places of each batch for the weight-step and gradient-refine emitters, and the most the
    extrapolation emitter's proposals take (the mutation emitter fills the rest)."""
    weight_steps = int(round(config.weight_steps * config.population))
    refined = max(1, int(round(config.refine_share * config.population))) if config.refine == "grad" else 0
    lengths = len(parse_lengths(config.extrapolate))
    extrapolated = extrapolation_places(config.population, lengths) if lengths else 0
    return weight_steps, refined, extrapolated


def check_places(config: RunConfig) -> None:
    """The fixed shares of the batch (weight steps, refined children, the most extrapolation
    proposals) must leave the mutation emitter a place; --extrapolate needs one itself."""
    weight_steps, refined, extrapolated = emitter_sizes(config)
    lengths = len(parse_lengths(config.extrapolate))
    if lengths and not extrapolated:
        least = next(n for n in itertools.count(config.population) if extrapolation_places(n, lengths))
        raise EvofoolError(f"--extrapolate with {lengths} length(s) needs a population of at least {least} "
                           f"(its proposals take at most a share of the batch, one place a length); got "
                           f"{config.population}")
    taken = {"--weight-steps": weight_steps, "--refine-share": refined, "--extrapolate": extrapolated}
    named = [name for name, places in taken.items() if places]
    if sum(taken.values()) >= config.population:
        names = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
        raise EvofoolError(f"{names} take {sum(taken.values())} of the {config.population} places of each "
                           f"generation: leave some for mutation")


def forward_images(input_shape, device, max_batch: int) -> int:
    """The most images one forward pass can hold, whichever runtime scores: a fixed chunk
    (padded), on ONNX Runtime one per stream at once (``torch.get_num_threads()`` streams at most)."""
    return max(forward_chunk(input_shape, device, max_batch, runtime="torch"),
               forward_chunk(input_shape, device, max_batch, runtime="onnxruntime") * max(1, torch.get_num_threads()))


def gradient_objective(classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """[0, 1] images -> differentiable per-class log-probabilities of the torch model
    (preprocessing and crops included): what ``--refine grad`` climbs."""
    def objective(images: torch.Tensor) -> torch.Tensor:
        return fitness_from_outputs(call_model(classifier, images), classifier.outputs, differentiable=True)

    return objective


def check_refine_config(config: RunConfig, classifier, kind: str) -> None:
    """``--refine grad`` needs genomes with weights (cppn, direct), a class model and gradients
    through it; and the fixed shares of the batch must leave the mutation emitter a place."""
    if config.refine != "grad":
        return
    from evofool.runtime import scored_outside_torch

    if not hasattr(encoding_class(config.encoding), "render_differentiable"):
        raise EvofoolError(f"--refine grad steps a genome's weights (CPPN links, or pixels); {config.encoding} "
                           f"genomes have none: use --encoding cppn or direct, or --refine off")
    if kind == SCORE:
        raise EvofoolError(f"--refine grad climbs a class's log-probability; {config.model} reports raw "
                           f"unit activations: use --refine off")
    if scored_outside_torch(classifier):
        raise EvofoolError(f"--refine grad needs gradients through the model; {config.model} is scored by "
                           f"ONNX Runtime, which has none: use a torchscript: copy of it or --refine off")


@dataclass
class Job:
    """A run bound to its folder, which it holds locked (one writer per run folder).

    Attributes:
        folder: The run folder.
        config: The run's config.
        engine: The engine (restored from a checkpoint when resuming).
        class_names: The model's class names.
        progress: Show a progress bar on stderr.
        hooks: Called after each checkpoint.
    """

    folder: RunFolder
    config: RunConfig
    engine: Engine
    class_names: list[str]
    progress: bool = True
    hooks: list[CheckpointHook] = field(default_factory=list)
    _stop_signal: int | None = None
    # False after resuming from checkpoint.prev because checkpoint.safetensors is damaged:
    # the next save then replaces the damaged file instead of rotating it over the only
    # intact checkpoint.
    _rotate: bool = True
    # The generation of the newest checkpoint on disk (None: none yet): what a failed
    # write tells the user survives.
    _saved_generation: int | None = None
    # Made by Job.resume: run() then says where it continues.
    _resumed: bool = False

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def start(cls, config: RunConfig, out: str | Path | None, classifier=None,
              files: dict[str, bytes] | None = None, **kwargs) -> "Job":
        """A new run in a new folder (``out``, or ``runs/<model>-<encoding>-seed<S>``), locked for this job."""
        config = config.validate().for_new_run()
        engine, classifier = build_engine(config, classifier)
        path = Path(out) if out is not None else RunFolder.default_path(config)
        folder = RunFolder.create(path, config, classifier.class_names,
                                  extra={"encoding_resolved": engine.encoding.config(),
                                         "scoring_resolved": engine.evaluator.record(),
                                         "selection_resolved": run_selection(config.selection,
                                                                             engine.archive.fitness_kind),
                                         "recombination_resolved": engine.recombination.config()
                                         if engine.recombination else None,
                                         "emitters_resolved": engine.config()["emitters"],
                                         "model_fingerprint": model_fingerprint(classifier)},
                                  keep_lock=True, files=files)
        try:
            job = cls(folder, config, engine, list(classifier.class_names), **kwargs)
            # A generation-0 checkpoint: a run killed before its first periodic checkpoint can
            # still be resumed (its folder would otherwise be neither resumable nor reusable).
            job.save(hooks=False)
        except BaseException:
            folder.release()
            raise
        return job

    @classmethod
    def resume(cls, path: str | Path, overrides: dict | None = None, **kwargs) -> "Job":
        """Continues a run from its newest intact checkpoint, holding the folder's lock.

        Args:
            path: The run folder.
            overrides: Config values given again by the user. Keys that change what the run
                computes (model, encoding, population, seed...) must equal the stored ones;
                others (generations, checkpoint_every, device...) replace them. ``generations``
                may not be below the generations already done.

        Raises:
            EvofoolError: not a run folder, in use by another process, no valid checkpoint, a
                config that changes the run, too few generations, a log damaged before its
                checkpoint's end.
        """
        folder = RunFolder.open(path)
        folder.acquire()
        try:
            return cls._resume_locked(folder, overrides, kwargs)
        except BaseException:
            folder.release()
            raise

    @classmethod
    def _resume_locked(cls, folder: RunFolder, overrides: dict | None, kwargs: dict) -> "Job":
        stored = folder.config()
        folder.check_writable(folder.class_names())
        config = _merged_config(folder, stored, overrides)
        saved = None
        if (not any(os.path.lexists(folder.path / n) for n in (checkpoint.CURRENT, checkpoint.PREVIOUS))
                and folder.log_bytes() == 0):
            # Stopped between creating its folder and its generation-0 checkpoint: nothing was
            # computed yet, and generation 0 is exactly what the config rebuilds.
            engine, classifier = build_engine(config)
            _check_model(folder, classifier)
            folder.open_log().close()
            ckpt_path = folder.path / checkpoint.CURRENT
        else:
            state, arrays, ckpt_path = _load_checkpoint(folder)
            if state.get("config_hash") != stored.hash():
                raise EvofoolError(f"{ckpt_path} belongs to another run (config hash "
                                   f"{state.get('config_hash')} != {stored.hash()})")
            try:
                saved, log_bytes = int(state["engine"]["generation"]), int(state["log_bytes"])
            except (KeyError, ValueError, TypeError) as exc:
                raise EvofoolError(f"{ckpt_path} does not fit this run: {exc}") from None
            _check_generations(folder, config, overrides, saved)
            engine, classifier = build_engine(config)
            _check_model(folder, classifier)
            try:
                engine.load_state_dict(state["engine"], arrays)
            except (KeyError, ValueError, TypeError) as exc:
                raise EvofoolError(f"{ckpt_path} does not fit this run: {exc}") from None
            _repair_log(folder, ckpt_path, log_bytes, saved)
        if overrides:  # remember extended generations etc. for the next resume
            doc = folder.read_config_doc()
            doc["config"] = config.to_dict()
            folder.write_config_doc(doc)
        job = cls(folder, config, engine, list(classifier.class_names), **kwargs)
        job._rotate = ckpt_path.name != checkpoint.PREVIOUS
        job._saved_generation = saved
        job._resumed = True
        return job

    def close(self) -> None:
        """Releases the run folder's lock (``run`` does at its end; the kernel does if the process dies)."""
        self.folder.release()

    # --- checkpoints ---------------------------------------------------------------------------
    @contextmanager
    def _reporting(self, what: str):
        """Turns a failed write of ``what`` (disk full, a link planted during the run...) into one
        line: what failed, which checkpoint is intact, and the command that continues the run."""
        try:
            yield
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
            raise self._write_failed(what, f"{exc.strerror or exc}{where}", fix) from None
        except EvofoolError as exc:
            raise self._write_failed(what, str(exc), "fix that") from None

    def _write_failed(self, what: str, reason: str, fix: str) -> EvofoolError:
        intact = (f"the last checkpoint (generation {self._saved_generation}) is intact"
                  if self._saved_generation is not None else "nothing was checkpointed yet")
        return EvofoolError(f"could not write {what} of generation {self.engine.generation} in "
                            f"{self.folder.path}: {reason}; {intact} ({fix}, then: evofool resume "
                            f"{shlex.quote(str(self.folder.path))})")

    def save(self, hooks: bool = True) -> Path:
        """Writes champions, a checkpoint and the summary for the generations completed so far.

        Raises:
            EvofoolError: when a file cannot be written (disk full...); the last checkpoint
                is then intact and no temp file is left.
        """
        self.folder.check_held()  # files are written by path: never into a folder another process may own
        archive = self.engine.archive
        with self._reporting("the champions"):
            self.folder.write_champions(archive.images.cpu().numpy(), archive.confidences(),
                                        archive.fitness.cpu().numpy(), archive.generation.cpu().numpy(),
                                        self.class_names, archive.fitness_kind)
        engine_state, arrays = self.engine.state_dict()
        with self._reporting("the checkpoint"):
            state = {"evofool_version": __version__, "config": self.config.to_dict(),
                     "config_hash": self.config.hash(), "log_bytes": self.folder.log_bytes(),
                     "engine": engine_state}
            path = checkpoint.save(self.folder.path, state, arrays, rotate=self._rotate)
        self._saved_generation = self.engine.generation
        self._rotate = True
        with self._reporting("summary.json"):
            self.folder.write_summary(self.summary())
        for hook in self.hooks if hooks else ():
            hook(self)
        return path

    def summary(self) -> dict:
        """Where the run stands, read from its log: generations, first generation each target held.

        A probability run reports its median confidence and the classes at each of the
        engine's ``THRESHOLDS``; a unit run (``fitness_kind == "score"``) its median and best
        activation, with no threshold counts (``None``: confidence levels mean nothing for
        activations). A damaged log line is skipped, with one warning line on stderr.
        """
        values = self.engine.archive.confidences()
        head = {"generation": self.engine.generation, "evaluations": self.engine.evaluations,
                "classes": len(self.class_names), "fitness_kind": self.engine.archive.fitness_kind}
        if not self.engine.archive.is_probability:
            return {**head, "median_activation": float(np.median(values)), "max_activation": float(np.max(values)),
                    **{k: None for k in THRESHOLDS}, **{f"all_{k[1:]}_at": None for k in THRESHOLDS}}
        reached = self._targets_reached()
        return {**head, "median_confidence": float(np.median(values)),
                **{f"{k}": int(np.sum(values >= v)) for k, v in THRESHOLDS.items()},
                **{f"all_{k[1:]}_at": reached.get(k) for k in THRESHOLDS}}

    def result_line(self) -> str:
        """The line ``evofool run`` and ``resume`` end with: where the run stands, and its folder."""
        s, where = self.summary(), f"run folder: {self.folder.path}"
        if s["fitness_kind"] == SCORE:
            return (f"{s['classes']} units: median activation {s['median_activation']:.4g}, best "
                    f"{s['max_activation']:.4g} after {s['generation']} generations; {where}")
        reached = f" (all ≥ 99.99 % at generation {s['all_9999_at']})" if s["all_9999_at"] else ""
        return (f"{s['n9999']}/{s['classes']} classes ≥ 99.99 %, {s['n99']}/{s['classes']} ≥ 99 %, "
                f"median {s['median_confidence']:.6f} after {s['generation']} generations{reached}; {where}")

    def _targets_reached(self) -> dict[str, int]:
        """``THRESHOLDS`` key -> the first generation every class held it (from the log)."""
        scan = self.folder.scan_log()
        if scan.damaged:
            print(f"warning: {self.folder.log_path}: skipped {len(scan.damaged)} damaged line(s) "
                  f"(first: line {scan.damaged[0]})", file=sys.stderr)
        reached = {}
        for record in scan.records:
            for key in THRESHOLDS:
                if key not in reached and record.get(key) == len(self.class_names):
                    reached[key] = record["generation"]
        return reached

    def _progress_text(self, record: dict) -> str:
        """The progress bar's postfix after a generation: confidences, or a unit run's activations."""
        speed = f"{record['evals_per_s']:.0f} evals/s"
        if not self.engine.archive.is_probability:
            return f"best activation {record['max']:.4g} median {record['median']:.4g} {speed}"
        return (f"best {record['max']:.4f} median {record['median']:.4f} "
                f"≥99.99%: {record['n9999']}/{len(self.class_names)} {speed}")

    def _nothing_to_do(self) -> str | None:
        """Why run() has no generation to run (``None``: it has)."""
        total, path = self.config.generations, shlex.quote(str(self.folder.path))
        if self.engine.generation >= total:
            return (f"nothing to do: {path} is at generation {self.engine.generation} of {total} "
                    f"(evofool resume {path} --generations N continues it to N)")
        if self._all_reached():
            return f"nothing to do: every class of {path} has reached --stop-at {self.config.stop_at}"
        return None

    # --- the loop ------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:
            # A second Ctrl-C abandons the generation; the last checkpoint stays valid.
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _all_reached(self) -> bool:
        stop = self.config.stop_at
        return stop is not None and bool(np.all(self.engine.archive.confidences() >= stop))

    def _append(self, log, record: dict) -> None:
        """Appends one record to the log (a failure is reported like any failed write)."""
        with self._reporting("log.jsonl"):
            safefs.write_all(log.fileno(), (json.dumps(record) + "\n").encode())

    def _sync(self, log) -> None:
        with self._reporting("log.jsonl"):
            os.fsync(log.fileno())

    def run(self, announce_stop: bool = True) -> int:
        """Runs until ``config.generations`` (or a signal); returns the process exit code.

        ``announce_stop``: print where a signal stopped it and how to resume (the CLI); the
        Python API raises an error that says so instead.

        The run folder stays locked until it returns (then ``close``).
        """
        engine, total = self.engine, self.config.generations
        every = self.config.checkpoint_every
        self.folder.acquire()  # held already, unless run() is called again
        try:
            self.folder.check_held()  # removed since Job.start/resume: say so before opening its log
        except EvofoolError:
            self.close()
            raise
        idle = self._nothing_to_do()
        if idle is None and self._resumed:
            print(f"resuming at generation {engine.generation} of {total}", file=sys.stderr)
        elif idle is not None:
            print(idle, file=sys.stderr)
        # Only the main thread may set signal handlers: a run in another thread (a notebook's
        # background job) is stopped by its process's signals as any Python code is.
        on_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._on_signal) for s in EXIT_SIGNAL} if on_main else {}
        bar = tqdm(total=total, initial=min(engine.generation, total), file=sys.stderr, unit="gen",
                   disable=not self.progress or idle is not None, dynamic_ncols=True, leave=True)
        try:
            with self.folder.open_log() as log:
                while engine.generation < total and self._stop_signal is None and not self._all_reached():
                    record = engine.step()
                    self._append(log, record)
                    bar.update(1)
                    bar.set_postfix_str(self._progress_text(record), refresh=False)
                    if every and engine.generation % every == 0 and engine.generation < total:
                        self._sync(log)
                        self.save()
                self._sync(log)
            self.save()
        finally:
            bar.close()
            close = getattr(self.engine.score, "close", None)
            if close is not None:  # Ray workers hold CPUs/GPUs until closed
                close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.close()
        if self._stop_signal is not None:
            if announce_stop:
                print(f"interrupted at generation {engine.generation}; checkpoint saved. "
                      f"Resume with: evofool resume {shlex.quote(str(self.folder.path))}", file=sys.stderr)
            return EXIT_SIGNAL[self._stop_signal]
        return 0


# --- resuming: the checks, one function each -----------------------------------------------------
def _merged_config(folder: RunFolder, stored: RunConfig, overrides: dict | None) -> RunConfig:
    """The stored config with the user's overrides, refusing ones that make it another run."""
    if not overrides:
        return stored
    if overrides.get("encoding", stored.encoding) != stored.encoding:
        # Another encoding: the recorded parameters are not its own (checking them would name
        # them unknown); the refusal below names what differs.
        overrides = {"encoding_params": {}, **overrides}
    elif isinstance(overrides.get("encoding_params"), dict):
        # Parameters given again are compared one by one; one not given again stays as
        # recorded (e.g. a render_dtype the run recorded, or took as legacy).
        overrides = {**overrides, "encoding_params": {**stored.encoding_params, **overrides["encoding_params"]}}
    merged = RunConfig.from_dict({**stored.to_dict(), **overrides})
    differing = stored.differing_keys(merged)
    if differing:
        raise EvofoolError(f"cannot resume {folder.path} with a different "
                           f"{', '.join(differing)} (that would be another run)")
    return merged.validate()


def _load_checkpoint(folder: RunFolder) -> tuple[dict, dict, Path]:
    """``checkpoint.load``, its warnings printed as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = checkpoint.load(folder.path)
    for w in caught:  # one plain line each (not Python's file:line warning format)
        print(f"warning: {w.message}", file=sys.stderr)
    return loaded


def _check_model(folder: RunFolder, classifier) -> None:
    """The model is the one the run was started with: its class names, in order, then its
    weights (``model_fingerprint``, recorded since runs record it). Champions keep the
    confidences the old model gave them, so new offspring scored by other weights would
    compete against numbers no model gives any more, and the run's exact resume is gone."""
    _check_class_names(folder, classifier)
    recorded = folder.read_config_doc().get("model_fingerprint")
    if recorded is None:  # a run started before runs recorded it
        return
    now = model_fingerprint(classifier)
    if now != recorded:
        raise EvofoolError(f"model {classifier.spec} has other weights than {folder.path} was started with "
                           f"(fingerprint {now}, recorded {recorded}): its champions' confidences are the old "
                           f"weights'; resume with those weights, or start a new run")


def _check_class_names(folder: RunFolder, classifier) -> None:
    """The classes the folder recorded are the model's, in order (an edited config.json, or a
    model file changed under the run, would otherwise go on writing champions that the
    folder's exports and transfers then refuse)."""
    recorded = folder.class_names()
    names = list(classifier.class_names)
    if recorded != names:
        first = next((i for i, (a, b) in enumerate(zip(recorded, names)) if a != b), min(len(recorded), len(names)))
        raise EvofoolError(f"{folder.path / 'config.json'} records {len(recorded)} class names, model "
                           f"{classifier.spec} has {len(names)}, first differing at class {first}: "
                           f"the folder was edited or the model changed")


def _check_generations(folder: RunFolder, config: RunConfig, overrides: dict | None, done: int) -> None:
    """``--generations`` is the new total: it may not undo generations already done."""
    if overrides and "generations" in overrides and config.generations < done:
        raise EvofoolError(f"cannot resume {folder.path} with --generations {config.generations}: "
                           f"{done} generations are done already (--generations is the total; "
                           f"pass {done} or more)")


def _repair_log(folder: RunFolder, ckpt_path: Path, log_bytes: int, generations: int) -> None:
    """Cuts the log back to its checkpoint, refusing (with the way out) a log damaged before that."""
    try:
        warning = folder.repair_log(log_bytes, generations)
    except LogDamaged as exc:
        raise EvofoolError(f"{exc}; {_log_recovery(folder, ckpt_path, exc.at)}") from None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _log_recovery(folder: RunFolder, ckpt_path: Path, damage_at: int) -> str:
    """How to get past a log damaged at byte ``damage_at``: an older checkpoint, or a backup."""
    previous = folder.path / checkpoint.PREVIOUS
    if ckpt_path.name == checkpoint.CURRENT and os.path.lexists(previous):
        try:
            state = checkpoint.read_state(previous)
            older = int(state["log_bytes"]) <= damage_at
            generation = int(state["engine"]["generation"])
        except (ValueError, KeyError, TypeError, OSError, EvofoolError):
            older = False
        if older:
            return (f"{checkpoint.PREVIOUS} (generation {generation}) predates the damage: move "
                    f"{ckpt_path} away, then run: evofool resume {shlex.quote(str(folder.path))}")
    return f"no checkpoint predates the damage: restore {folder.log_path} from a backup, or start a new run"
