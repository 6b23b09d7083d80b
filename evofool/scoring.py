"""The scoring stack, built in one place: model, 10 crops, evaluator, runtime and threads.

Every command that scores images (run and resume, Ray workers, transfer, export
--verify, classify) builds it with ``build_scoring``, so an image gets the same bits
wherever it is scored, given the same recorded runtime.

Runtimes (``--runtime``):

* ``torch``: ``classifier.module(classifier.preprocess(x))`` in torch (bfloat16 autocast
  on CUDA with precision ``auto``).
* ``onnxruntime``: that function exported to ONNX once per weights and chunk (cached, see
  ``evofool.runtime``), checked against torch on the probe chunk and scored by ONNX
  Runtime. Anything that stops it (not installed, an export that fails, scores that
  differ) is a one-line error: the run asked for exactly this.
* ``auto``: ``onnxruntime`` on the CPU, falling back to torch with one ``note:`` line on
  stderr when it cannot be used; torch on CUDA.

Whatever the runtime: ``onnx:`` models are ONNX Runtime sessions already, and ``unit:``
specs (forward hooks) and bfloat16/float16 autocast are torch. Gradients (ascent,
perturb) and training use ``classifier.module`` directly and are always torch: the
runtime only changes how a ``BatchEvaluator`` scores.

A run resolves ``auto`` once, at its start, and records the result (``RunConfig.runtime``),
so its resume and its Ray workers score on the same runtime; a run recorded before
runtimes existed scored with torch (``LEGACY_RUNTIME``).
"""

from __future__ import annotations

import os
import sys

import torch

from evofool.devices import default_device
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator, forward_chunk
from evofool.models.base import Classifier
from evofool.models.outputs import SCORES
from evofool.runtime import (
    LEGACY_RUNTIME,
    PACKAGES,
    RUNTIMES,
    RuntimeUnavailable,
    disagreement,
    exported_graph,
    missing_package,
    state_digest,
)


# --- threads -------------------------------------------------------------------------------------

def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int = 0) -> int:
    """``threads``; for 0, ``OMP_NUM_THREADS`` when it is set (the usual way to give a
    process its share), else every CPU this process may run on."""
    if threads > 0:
        return int(threads)
    try:
        from_env = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        from_env = 0
    return from_env if from_env > 0 else available_cpus()


def apply_threads(threads: int = 0) -> int:
    """Sets torch's intra-op threads to ``resolve_threads(threads)`` and returns that number
    (ONNX Runtime sessions take the same)."""
    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# --- the stack -----------------------------------------------------------------------------------

def load_classifier(spec: str, device: torch.device | str, crops: int = 1) -> Classifier:
    """The classifier a run scores with: the model ``spec`` names, 10-crop wrapped if ``crops`` is 10."""
    from evofool.models import load_model

    return with_crops(load_model(spec, device=device), crops)


def with_crops(classifier: Classifier, crops: int) -> Classifier:
    """``classifier``, 10-crop wrapped when ``crops`` is 10."""
    if crops == 1:
        return classifier
    from evofool.crops import TenCropClassifier

    return TenCropClassifier.wrap(classifier)


def recorded_runtime(config: dict) -> str:
    """The runtime a recorded config (a run's ``config.json`` entry, a manifest's run) scored
    with: its ``runtime``, or torch for a record made before runtimes existed."""
    return str(config.get("runtime") or LEGACY_RUNTIME)


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise EvofoolError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def build_scoring(model: str | Classifier, *, device: torch.device | str | None = None, crops: int = 1,
                  precision: str = "auto", max_batch: int = 1024, runtime: str = "auto",
                  threads: int | None = None, probe: bool = True) -> tuple[Classifier, BatchEvaluator]:
    """The classifier and the evaluator that scores with it.

    Args:
        model: A model spec, or a classifier already loaded (e.g. to check its memory first).
        device: Where to score (``None``: CUDA if available, else the CPU).
        crops: 1, or 10 for 10-crop scoring (a classifier passed in is wrapped too).
        precision: As ``BatchEvaluator``.
        max_batch: Cap on the fixed forward chunk (``forward_chunk``).
        runtime: ``auto``, ``torch`` or ``onnxruntime`` (see the module docstring);
            ``evaluator.runtime`` is what it resolved to.
        threads: Torch and ONNX Runtime intra-op threads (0: ``resolve_threads``);
            ``None`` leaves torch's setting and gives ONNX Runtime the same.
        probe: Score one chunk of noise now (``BatchEvaluator.probe``), so a model that
            answers NaN fails before any work; ONNX Runtime's check always does.

    Raises:
        EvofoolError: an unknown runtime, a model that fails, or ``onnxruntime`` asked for
            where it cannot be used.
    """
    check_runtime(runtime)
    device = torch.device(device) if device is not None else default_device()
    classifier = with_crops(model, crops) if isinstance(model, Classifier) else load_classifier(model, device, crops)
    n_threads = apply_threads(threads) if threads is not None else torch.get_num_threads()
    evaluator = BatchEvaluator(classifier, device=device, max_batch=max_batch, precision=precision)
    if evaluator.precision == "bfloat16" and device.type == "cpu" and not native_cpu_bfloat16():
        print("note: this CPU has no native bfloat16 (AVX512_BF16 or AMX): bfloat16 autocast is "
              "emulated, ~10x slower than float32 (--precision float32)", file=sys.stderr)
    if _wants_onnxruntime(evaluator, runtime) and _use_onnxruntime(evaluator, runtime, max_batch, n_threads):
        return classifier, evaluator  # the check scored the probe chunk
    if probe:
        evaluator.probe()  # NaN outputs or batch-1-only models: refused before any work
    return classifier, evaluator


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512_BF16 or AMX).

    Without it torch emulates bfloat16: measured on an AMD EPYC (Zen 1, AVX2, 2 threads),
    EfficientNet-Lite0 batch 50 ran 2.1 images/s in bfloat16 autocast (channels_last)
    against 21.4 in float32 eager and 53.1 on ONNX Runtime. With it, bfloat16 is still not
    the fast path: on an AMD EPYC Zen 4 (AVX512_BF16, 2 threads), 116 images/s in bfloat16
    autocast (channels_last) against 51 in float32 eager and 179 on ONNX Runtime (float32).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def torch_only(evaluator: BatchEvaluator) -> str | None:
    """Why this stack is scored by torch whatever the runtime (None: ONNX Runtime could)."""
    classifier = evaluator.classifier
    if classifier.outputs == SCORES:
        return f"{classifier.spec} scores units through forward hooks, which an ONNX export does not keep"
    if evaluator.precision != "float32":
        return (f"precision {evaluator.precision} is a torch autocast (ONNX Runtime graphs are float32: "
                f"--precision float32)")
    return None


def _wants_onnxruntime(evaluator: BatchEvaluator, runtime: str) -> bool:
    """Whether to export and check: ``onnxruntime``, or ``auto`` on the CPU, for a torch model
    that can be exported (``onnx:`` models are ONNX Runtime already)."""
    if runtime == "torch" or evaluator.runtime == "onnxruntime":
        return False
    blocked = torch_only(evaluator)
    if blocked is not None and runtime == "onnxruntime":
        raise EvofoolError(f"--runtime onnxruntime: {blocked}; use --runtime torch")
    # On CUDA, torch's bfloat16 autocast is the fast path (and the exact float32 one is torch's).
    return blocked is None and (runtime == "onnxruntime" or evaluator.device.type == "cpu")


def _use_onnxruntime(evaluator: BatchEvaluator, runtime: str, max_batch: int, threads: int) -> bool:
    """Switches ``evaluator`` to the checked ONNX export of its scoring function.

    Returns False (torch, after one ``note:`` line) where ``auto`` cannot use ONNX Runtime;
    raises ``EvofoolError`` where ``onnxruntime`` was asked for.
    """
    try:
        _switch_to_checked_graph(evaluator, max_batch, threads)
        return True
    except RuntimeUnavailable as exc:
        evaluator.use_graph(None)
        if runtime == "onnxruntime":
            raise EvofoolError(f"--runtime onnxruntime: {exc}; use --runtime torch") from None
        fix = f" ({exc.fix})" if exc.fix else ""
        print(f"note: {exc}; scoring with torch{fix}", file=sys.stderr)
        return False


def _switch_to_checked_graph(evaluator: BatchEvaluator, max_batch: int, threads: int) -> None:
    """Scores the probe chunk on torch, then with the export at ONNX Runtime's chunk
    (``forward_chunk``), and keeps the export if the two agree (``disagreement``). A cached
    export that disagrees is exported again once (the model's code may have changed).

    Raises:
        RuntimeUnavailable: a package missing, a stateful model, an export that fails or
            scores that differ. A model error on torch (NaN...) is an ``EvofoolError``.
    """
    classifier = evaluator.classifier
    missing = missing_package()
    if missing is not None:
        raise RuntimeUnavailable(f"{PACKAGES[missing]} is not installed", fix=f"pip install {missing}")
    noise = evaluator.probe_images()
    before = state_digest(classifier.module)
    reference = evaluator.log_probs(noise)  # on torch: the probe (a model error stops here)
    if state_digest(classifier.module) != before:  # e.g. a call counter in a buffer
        raise RuntimeUnavailable(f"{classifier.spec} changes its own buffers as it scores, which an "
                                 f"export would freeze")
    chunk = forward_chunk(classifier.input_shape, evaluator.device, max_batch, "onnxruntime")
    graph, exported = exported_graph(classifier, chunk, evaluator.device, threads)
    problem = _disagreement_with(evaluator, graph, noise, reference)
    if problem is not None and not exported:
        graph, _ = exported_graph(classifier, chunk, evaluator.device, threads, again=True)
        problem = _disagreement_with(evaluator, graph, noise, reference)
    if problem is not None:
        raise RuntimeUnavailable(f"ONNX Runtime's scores of {classifier.spec} differ from torch's ({problem})")


def _disagreement_with(evaluator: BatchEvaluator, graph, noise: torch.Tensor, reference: torch.Tensor) -> str | None:
    """``evaluator`` switched to ``graph``; how its scores of ``noise`` differ from ``reference``."""
    evaluator.use_graph(graph)
    try:
        scored = evaluator.log_probs(noise)
    except EvofoolError as exc:
        raise RuntimeUnavailable(f"ONNX Runtime cannot score the export of {evaluator.classifier.spec} "
                                 f"({exc})") from None
    return disagreement(reference, scored)


__all__ = ["apply_threads", "available_cpus", "build_scoring", "load_classifier", "recorded_runtime",
           "resolve_threads", "torch_only"]
