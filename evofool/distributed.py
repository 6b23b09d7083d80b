"""Distributed evaluation on Ray: render and score a generation on many workers.

Only the evaluation travels. The driver keeps the archive, the RNG, variation and the
checkpoints; each generation it splits the offspring into contiguous, index-tagged
sub-batches, ships their genomes to Ray actors (one per GPU, or N CPU workers), and
reassembles the returned images and log-probabilities in order. Rendering and scoring
are deterministic, so a Ray run's archive equals the local run's for the same seed.

Each actor loads the model once. A worker that dies mid-run has its sub-batch handed
to another worker and is replaced by a fresh actor; a warning line says so on stderr.

Importing this module needs Ray (``pip install 'evofool[ray]'``); ``evofool.job``
turns the ImportError into a one-line message.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from evofool.config import RunConfig
from evofool.encodings import make_encoding
from evofool.encodings.base import Encoding, Genomes
from evofool.errors import EvofoolError, first_line
from evofool.runtime import model_fingerprint
from evofool.scoring import build_scoring

DEFAULT_CPU_WORKERS = 2
# Sub-batches smaller than this are avoided: on CPU, conv/matmul kernels can pick another
# code path for tiny batches (LeNet differs in the last bits below ~12 images), which
# would break bit-for-bit equality with the local evaluator.
MIN_SUB_BATCH = 32


# --- the worker (a plain class, so it can also be tested without Ray) -----------------------

class ScoringWorker:
    """Renders and scores sub-batches; holds one model and one encoding for its lifetime.

    Its scoring stack is the driver's: ``build_scoring`` with the run's crops, precision,
    chunk cap and runtime (the one the run resolved and recorded: a worker that cannot
    use it fails to start, rather than score other bits).

    Args:
        config: ``RunConfig.to_dict()`` of the run.
        device: ``"cpu"`` or ``"cuda"`` (on Ray, the GPU assigned to this actor).
        threads: Torch and ONNX Runtime intra-op threads (the CPUs Ray reserved for this
            actor, so that co-located workers do not oversubscribe).
    """

    def __init__(self, config: dict, device: str = "cpu", threads: int = 1) -> None:
        cfg = RunConfig.from_dict(config)
        self.device = torch.device(device)
        classifier, self.evaluator = build_scoring(cfg.model, device=self.device, crops=cfg.crops,
                                                   precision=cfg.precision, max_batch=cfg.max_batch,
                                                   runtime=cfg.runtime, threads=max(1, int(threads)),
                                                   probe=False)
        self.encoding = make_encoding(cfg.encoding, classifier.input_shape, self.device,
                                      **cfg.encoding_params)
        self.fingerprint = model_fingerprint(classifier)

    def ready(self) -> dict:
        """Who this worker is, once its model is loaded: pid, host, model fingerprint and
        scoring stack (``BatchEvaluator.record``)."""
        return {"pid": os.getpid(), "host": os.uname().nodename, "fingerprint": self.fingerprint,
                "scoring": self.evaluator.record()}

    def score(self, tag: int, payload, send_images: bool) -> tuple[int, np.ndarray | None, np.ndarray]:
        """``(tag, images uint8 or None, log_probs float64 B×K)`` of one sub-batch."""
        genomes = from_wire(payload, self.device)
        with torch.inference_mode():
            images = self.encoding.render(genomes)
            log_probs = self.evaluator.log_probs(images)
        return tag, (images.cpu().numpy() if send_images else None), log_probs.cpu().numpy()


def to_wire(genomes: Genomes):
    """Genomes in the form they travel in.

    Tensors (``direct``) go as one uint8 NumPy array, which Ray's object store moves
    without pickling. Other genomes (``cppn``: frozen dataclasses of small NumPy
    arrays) go as the objects themselves: pickle-5 ships their arrays as raw buffers,
    and unpickling is ~10x cheaper than ``Encoding.unpack``, which re-validates every
    graph (measured: 0.04 s vs 0.39 s per 200 CPPNs).
    """
    if isinstance(genomes, torch.Tensor):
        return genomes.detach().cpu().numpy()
    return list(genomes)


def from_wire(payload, device: torch.device) -> Genomes:
    """Inverse of ``to_wire`` on the worker."""
    if isinstance(payload, np.ndarray):
        # Arrays from the object store are read-only; torch wants a writable one.
        return torch.from_numpy(np.array(payload, copy=True)).to(device)
    return payload


# --- connecting and sizing ---------------------------------------------------------------

@dataclass(frozen=True)
class WorkerPlan:
    """How many actors to start and what each reserves."""

    count: int
    num_cpus: float
    num_gpus: float
    threads: int

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"


def wanted_workers(config: RunConfig, gpus: float) -> int:
    """``config.workers``, or one per GPU, or ``DEFAULT_CPU_WORKERS`` without GPUs."""
    if config.workers > 0:
        return config.workers
    if gpus >= 1 and config.device != "cpu":
        return int(gpus)
    return DEFAULT_CPU_WORKERS


def plan_workers(config: RunConfig, nodes: list[dict]) -> WorkerPlan:
    """Sizes the actors from the alive nodes' resources (``ray.nodes()``).

    CPU actors reserve an equal share of the cluster's CPUs, capped by the smallest node
    so that every actor fits somewhere; torch then uses that many threads. GPU actors
    reserve one GPU each, or an equal fraction when there are more workers than GPUs.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpus = sum(r.get("GPU", 0.0) for r in alive)
    cpus = [r.get("CPU", 0.0) for r in alive if r.get("CPU", 0.0) >= 1]
    count = wanted_workers(config, gpus)
    if config.device not in (None, "", "auto", "cpu") and gpus == 0:
        raise EvofoolError(f"--device {config.device} asked for, but the Ray cluster has no GPU")
    if gpus >= 1 and config.device != "cpu":
        # 1/k with k actors per GPU always packs; 2/3 each would leave actors unplaceable.
        share = 1.0 / math.ceil(count / int(gpus))
        return WorkerPlan(count, num_cpus=1, num_gpus=share, threads=1)
    if not cpus:
        raise EvofoolError("the Ray cluster has no node with a CPU to run workers on")
    per_worker = max(1, min(int(min(cpus)), int(sum(cpus)) // count))
    return WorkerPlan(count, num_cpus=per_worker, num_gpus=0, threads=per_worker)


def local_cpus() -> int:
    """CPUs this process may use (respects affinity masks, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def connect(address: str, config: RunConfig) -> bool:
    """Connects to Ray; returns True when this call started a local instance.

    ``"auto"`` attaches to a cluster running on this machine (``ray start``) or, when
    there is none, starts a private one sized to this machine's cores; ``"local"``
    always starts a private one. Any other value is a cluster address (``HOST:6379``,
    or ``ray://HOST:10001`` for Ray Client). A Ray already initialised in this process
    (tests, notebooks) is used as it is.

    Raises:
        EvofoolError: no cluster at the address, or a local instance that cannot start.
    """
    if ray.is_initialized():
        return False
    # No usage-stats reporting from a run (and no network access it would need).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    # Ray logs a warning whenever it turns its token authentication on (a good thing).
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if address not in ("auto", "local"):
        host, port = _host_port(address)
        # ray.init retries an address where nothing listens for minutes: ask first.
        if not _answers(host, port, ADDRESS_PROBE_S):
            raise EvofoolError(f"cannot connect to the Ray cluster at {address}: nothing answers at {host}:{port} "
                               f"within {ADDRESS_PROBE_S:g} s (is it up?)")
        try:
            # Ray Client takes none of these options (the cluster's own settings apply).
            ray.init(address=address, **({} if address.startswith("ray://") else quiet))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise EvofoolError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)} "
                               f"(is it up? a cluster with token authentication also needs "
                               f"RAY_AUTH_MODE=token and its token here: see docs/ray.md)") from None
        return False
    if address == "auto" and _local_cluster_answers():
        try:
            ray.init(address="auto", **quiet)
            return False
        except ConnectionError:
            pass  # no cluster on this machine after all: start one for this run
    gpus = torch.cuda.device_count() if config.device != "cpu" else 0
    # Enough CPU slots for the workers asked for, even beyond the cores (the user's call).
    cpus = max(local_cpus(), wanted_workers(config, gpus))
    try:
        # 512 MiB of object store holds many generations in flight, even of photo-sized images.
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, object_store_memory=512 * 2**20, **quiet)
    except (RuntimeError, OSError, ValueError) as exc:
        raise EvofoolError(f"could not start a local Ray instance: {first_line(exc)}") from None
    return True


def _local_cluster_answers(timeout_s: float = 2.0) -> bool:
    """Whether ``ray.init(address="auto")`` would find a live cluster.

    Ray remembers the last ``ray start`` in a file that outlives a cluster killed without
    ``ray stop``; attaching to such an address retries for minutes, so probe it first.
    """
    try:
        from ray._private.services import canonicalize_bootstrap_address
        address = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return False  # Ray found no cluster at all
    except Exception:  # pragma: no cover - Ray internals changed: let ray.init decide
        return True
    if address is None:
        return False
    host, _, port = address.rpartition(":")
    try:
        return _answers(host, int(port), timeout_s)
    except ValueError:
        return False


ADDRESS_PROBE_S = 5.0  # how long a cluster address may take to accept a connection


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` of a cluster address (``ray://`` prefix allowed; an IPv6 host in brackets).

    Raises:
        EvofoolError: no host, or no port in 1..65535.
    """
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EvofoolError(f"--ray {address!r} is not a cluster address: give HOST:PORT (port 1-65535), "
                           f"ray://HOST:PORT, auto, local or off")
    return host, int(port)


def _answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether something accepts a TCP connection at ``host:port`` within ``timeout_s``."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _init_error(exc: RayActorError) -> str:
    """The worker's own error from a failed actor ``__init__`` (the traceback's last line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    # "evofool.errors.EvofoolError: model file not found" -> the message alone
    name, sep, message = last.partition(": ")
    return message if sep and name.replace(".", "").replace("_", "").isalnum() else last


# --- the driver side ---------------------------------------------------------------------

class RayEvaluator:
    """A ``Scorer`` that renders and scores each generation on Ray actors.

    Args:
        config: The run's config (sent to the workers, which rebuild model and encoding).
        encoding: The driver's encoding (sub-batching; its device receives the results).
        plan: Number and size of the actors.
        sub_batches_per_worker: Sub-batches per worker per generation (more balances
            uneven workers better; fewer has less per-task overhead).
        max_restarts: Replacement actors the evaluator may start over its lifetime before
            it gives up (a crash loop, e.g. a worker node out of memory).
        start_timeout_s: How long to wait for actors to load the model (and, when every
            worker is gone, for a replacement to start).
        fingerprint: ``model_fingerprint`` of the driver's classifier; workers whose model
            differs are refused. ``None`` skips the check.
        owns_ray: Shut Ray down in ``close`` (it was started for this run).
    """

    def __init__(self, config: RunConfig, encoding: Encoding, plan: WorkerPlan, *,
                 sub_batches_per_worker: int = 1, max_restarts: int = 16,
                 start_timeout_s: float = 300.0, fingerprint: str | None = None,
                 owns_ray: bool = False) -> None:
        self.config = config
        self.encoding = encoding
        self.device = encoding.device
        self.plan = plan
        self.sub_batches_per_worker = max(1, int(sub_batches_per_worker))
        self.max_restarts = int(max_restarts)
        self.start_timeout_s = float(start_timeout_s)
        self.fingerprint = fingerprint
        self.owns_ray = owns_ray
        self.restarts = 0
        # ``direct`` renders a genome as itself: the driver already holds the images, so
        # workers return only log-probabilities (half the traffic).
        self.send_images = encoding.name != "direct"
        self._config_dict = config.to_dict()
        self._actor_class = ray.remote(ScoringWorker).options(
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
            # Deaths are handled here (resubmit + replace, with a warning), not by Ray's
            # silent retries.
            max_restarts=0, max_task_retries=0)
        self._idle: collections.deque = collections.deque()  # ready actors
        self._joining: dict = {}  # ready() ObjectRef -> actor still loading its model
        for _ in range(plan.count):
            self._spawn()
        self._wait_for_workers()

    @classmethod
    def from_config(cls, config: RunConfig, encoding: Encoding, classifier=None, **kwargs) -> "RayEvaluator":
        """Connects to ``config.ray`` and starts the workers the config asks for.

        Raises:
            EvofoolError: no cluster at the address, workers that cannot start.
        """
        owns = connect(str(config.ray), config)
        try:
            plan = plan_workers(config, ray.nodes())
            fingerprint = model_fingerprint(classifier) if classifier is not None else None
            return cls(config, encoding, plan, fingerprint=fingerprint, owns_ray=owns, **kwargs)
        except BaseException:
            if owns:
                ray.shutdown()
            raise

    # --- actors ----------------------------------------------------------------------------
    @property
    def workers(self) -> list:
        """Handles of the actors (ready and still starting)."""
        return list(self._idle) + list(self._joining.values())

    def _spawn(self) -> None:
        actor = self._actor_class.remote(self._config_dict, self.plan.device, self.plan.threads)
        self._joining[actor.ready.remote()] = actor

    def _replace(self, actor, reason: str) -> None:
        """Drops a dead actor and starts a fresh one (within ``max_restarts``)."""
        ray.kill(actor, no_restart=True)  # frees its resources if it is only unreachable
        if self.restarts >= self.max_restarts:
            raise EvofoolError(f"Ray workers died {self.restarts + 1} times ({reason}); giving up "
                               f"(the last checkpoint is intact)")
        self.restarts += 1
        self._spawn()

    def _joined(self, ref) -> None:
        """Moves an actor whose ``ready()`` finished to the idle pool (or replaces it)."""
        actor = self._joining.pop(ref)
        try:
            info = ray.get(ref)
        except RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):  # cannot build model/encoding: no retry
                raise EvofoolError(f"a Ray worker could not start: {_init_error(exc)}") from None
            self._warn(f"a Ray worker died while starting ({first_line(exc)}); starting another")
            self._replace(actor, first_line(exc))
            return
        runtime = info.get("scoring", {}).get("runtime")
        if self.config.runtime != "auto" and runtime != self.config.runtime:
            ray.kill(actor, no_restart=True)
            raise EvofoolError(f"the Ray worker on {info['host']} scores with {runtime}, this run with "
                               f"{self.config.runtime}; install the same evofool on every node")
        if self.fingerprint is not None and info["fingerprint"] != self.fingerprint:
            ray.kill(actor, no_restart=True)
            raise EvofoolError(f"the Ray worker on {info['host']} loaded another model for "
                               f"{self.config.model!r} than this machine (weights fingerprint "
                               f"{info['fingerprint']} != {self.fingerprint}); install the same "
                               f"evofool and model files on every node")
        self._idle.append(actor)

    def _wait_for_workers(self) -> None:
        """Blocks until every actor has loaded its model."""
        while self._joining:
            done, _ = ray.wait(list(self._joining), num_returns=1, timeout=self.start_timeout_s)
            if not done:
                self._stuck(f"{len(self._joining)} of {self.plan.count} Ray workers did not start "
                            f"within {self.start_timeout_s:.0f} s")
            self._joined(done[0])

    def _stuck(self, what: str) -> None:
        need = f"{self.plan.num_cpus:g} CPU"
        if self.plan.num_gpus:
            need += f" + {self.plan.num_gpus:g} GPU"
        free = ray.available_resources()
        free = ", ".join(f"{free.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
        raise EvofoolError(f"{what} (each needs {need}; the cluster has {free} free); try fewer --workers")

    @staticmethod
    def _warn(message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)  # keeps a progress bar intact

    # --- scoring -----------------------------------------------------------------------------
    def split(self, n: int) -> list[np.ndarray]:
        """Contiguous index ranges of the sub-batches of an ``n``-genome generation."""
        parts = len(self.workers) * self.sub_batches_per_worker
        parts = max(1, min(parts, n // MIN_SUB_BATCH))
        return [idx for idx in np.array_split(np.arange(n), parts) if len(idx)]

    def __call__(self, genomes: Genomes) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images B×C×H×W uint8, log_probs B×K float64)`` on the driver's device, in order."""
        parts = self.split(len(genomes))
        payloads = [to_wire(self.encoding.take(genomes, idx)) for idx in parts]
        results: list = [None] * len(parts)
        pending = collections.deque(range(len(parts)))
        in_flight: dict = {}  # score() ObjectRef -> (actor, tag)
        while pending or in_flight:
            while pending and self._idle:
                actor, tag = self._idle.popleft(), pending.popleft()
                in_flight[actor.score.remote(tag, payloads[tag], self.send_images)] = (actor, tag)
            refs = list(in_flight) + list(self._joining)
            if not refs:  # pragma: no cover - _replace always leaves an actor joining
                raise EvofoolError("no Ray worker is left")
            # Without a running task, only a starting replacement can make progress: bound it.
            timeout = None if in_flight else self.start_timeout_s
            done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if not done:
                self._stuck("no Ray worker could be started to replace the dead ones")
            ref = done[0]
            if ref in self._joining:
                self._joined(ref)
                continue
            actor, tag = in_flight.pop(ref)
            try:
                got_tag, images, log_probs = ray.get(ref)
            except RayActorError as exc:
                if getattr(exc, "actor_init_failed", False):
                    raise EvofoolError(f"a Ray worker could not start: {_init_error(exc)}") from None
                first, last = int(parts[tag][0]), int(parts[tag][-1])
                self._warn(f"a Ray worker died ({first_line(exc)}); resubmitting its sub-batch "
                           f"(genomes {first}-{last}) to another worker and starting a replacement")
                pending.appendleft(tag)
                self._replace(actor, first_line(exc))
                continue
            except RayTaskError as exc:
                if isinstance(exc.cause, EvofoolError):
                    raise EvofoolError(str(exc.cause)) from None
                raise
            if got_tag != tag:  # pragma: no cover - a mix-up would corrupt the archive
                raise RuntimeError(f"Ray worker returned sub-batch {got_tag} for {tag}")
            results[tag] = (images, log_probs)
            self._idle.append(actor)
        log_probs = torch.from_numpy(np.concatenate([r[1] for r in results])).to(self.device)
        if self.send_images:
            images = torch.from_numpy(np.concatenate([r[0] for r in results])).to(self.device)
        else:
            images = self.encoding.render(genomes)
        return images, log_probs

    # --- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stops the actors (and Ray, where this evaluator started it)."""
        for actor in self.workers:
            ray.kill(actor, no_restart=True)
        self._idle.clear()
        self._joining.clear()
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> "RayEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RayEvaluator", "ScoringWorker", "WorkerPlan", "connect", "from_wire", "model_fingerprint",
           "plan_workers", "to_wire"]
