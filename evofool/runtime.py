"""ONNX Runtime for torch models: export once per weights, cache, check against torch.

On the CPU, ONNX Runtime runs evofool's models about twice (LeNet) to four times
(EfficientNet-Lite0) as fast as torch eager. Measured on AMD EPYC (Zen 4, AVX-512,
2 cores, torch 2.13, onnxruntime 1.32): LeNet at batch 200, 9.5k vs 18.9k images/s;
EfficientNet-Lite0 at batch 50, 38 vs 156 images/s (max |Δ logit| 1.3e-5; bfloat16
autocast + channels_last in torch reached 82-95).

The whole scoring function of a classifier, ``module(preprocess(x))`` (10 crops,
ensembles and smoothing defences included), is exported as one graph with a STATIC
batch of the evaluator's chunk: the evaluator only ever feeds that shape, and at a fixed
shape ONNX Runtime gave the same bits at every batch position and with 1 or 2 intra-op
threads (LeNet, measured here), as torch does.

An export is cached under ``$EVOFOOL_CACHE/onnx`` (default ``~/.cache/evofool/onnx``;
never the run folder) in a file named by ``export_key``: a hash of the weights, the
spec, the chunk, the input shape and the torch / onnx / onnxruntime / evofool versions,
so an export of other weights, or by other software, is never picked up. Files are
written to a temporary name and renamed, so a reader never sees half a file.

Nothing here imports ``onnx`` or ``onnxruntime`` at module level: evofool runs (on
torch) without them.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from evofool import __version__
from evofool.errors import EvofoolError, first_line
from evofool.models.base import Classifier, identity

RUNTIMES = ("auto", "torch", "onnxruntime")
# What scored every run recorded before runtimes existed: a config without ``runtime``.
LEGACY_RUNTIME = "torch"
# Largest |log-prob difference| between ONNX Runtime and torch on the probe chunk for
# ONNX Runtime to be used: float32 kernels that differ in summation order give ~1e-6
# for LeNet and ~3e-5 for EfficientNet-Lite0 (|Δ logit| 1.3e-5, and a log-softmax adds
# the errors of two logits); 1e-4 passes those and catches a wrong graph.
TOLERANCE = 1e-4
CACHE_ENV = "EVOFOOL_CACHE"
# Changes whenever the exported graph or its export options change: old files then miss.
EXPORT_FORMAT = 1
PACKAGES = {"onnxruntime": "ONNX Runtime", "onnx": "the onnx package"}


class RuntimeUnavailable(Exception):
    """ONNX Runtime cannot score this classifier here; the message says why, on one line,
    and ``fix`` how to change that, where there is a way (``pip install onnxruntime``)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


# --- what is exported -------------------------------------------------------------------------

class ScoringGraph(nn.Module):
    """``module(preprocess(x))`` of a classifier as one module: [0, 1] pixels → raw outputs."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.net = classifier.module
        # A Normalize preprocess is a module (its buffers are then in the state_dict and
        # the fingerprint); the identity function becomes nn.Identity, so that the graph
        # can be scripted (see export_onnx); another function is kept as it is.
        preprocess = classifier.preprocess
        self.preprocess = nn.Identity() if preprocess is identity else preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


def _importable(name: str) -> bool:
    """Whether ``import name`` would find the package, without importing it (``import onnx``
    alone costs 0.6 s, and a cached export does not need it)."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_package() -> str | None:
    """``"onnxruntime"`` or ``"onnx"`` when that package cannot be imported, else None.

    Both are needed: ``onnx`` by torch's exporter, ``onnxruntime`` to run the graph.
    """
    return next((name for name in PACKAGES if not _importable(name)), None)


def scored_outside_torch(classifier: Classifier) -> bool:
    """True when a module inside is not torch (an ``onnx:`` model's ONNX Runtime session):
    such a classifier is scored as it is and cannot be exported again."""
    return any(getattr(m, "differentiable", True) is False for m in classifier.module.modules())


# --- the cache key -------------------------------------------------------------------------------

_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(module: nn.Module) -> list:
    """A module's public non-tensor settings (Normalize's scale, a blur's sigma, crop sizes)."""
    out = []
    for key, value in sorted(vars(module).items()):
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _PLAIN) or (isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value)):
            out.append((key, value))
        elif callable(value) and not isinstance(value, nn.Module):  # a function preprocess
            out.append((key, f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"))
    return out


def state_digest(module: nn.Module) -> str:
    """sha256 of a module's weights and buffers (``update_with_weights``)."""
    h = hashlib.sha256()
    update_with_weights(h, module)
    return h.hexdigest()


def update_with_weights(h, module: nn.Module) -> None:
    """Feeds a module's weights into hash ``h``: its ``state_dict`` bytes, plus the
    ``weights_digest()`` of any submodule whose weights live outside torch (ONNX files)."""
    for name, tensor in sorted(module.state_dict().items()):
        h.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for name, sub in module.named_modules():
        digest = getattr(sub, "weights_digest", None)
        if callable(digest):
            h.update(f"|{name}|digest|{digest()}|".encode())


def model_fingerprint(classifier) -> str:
    """sha256 of a classifier's weights, class names and input shape (first 16 hex digits).

    Weights are the module's ``state_dict`` plus the ``weights_digest()`` of any submodule
    that has one (``onnx:`` models: the sha256 of the ONNX file).

    Recorded in a run folder's ``config.json``: a resume whose model has other weights (a
    retrained ``torchscript:PATH`` under the same name) is refused, and a Ray driver checks
    that every worker loaded the same model (a ``lenet:PATH`` that holds another file on some
    node would otherwise silently change the run).
    """
    h = hashlib.sha256(repr((list(classifier.class_names), tuple(classifier.input_shape))).encode())
    # Modules whose weights live outside torch (an ONNX Runtime session: an empty
    # state_dict) name them by a digest instead, wherever they sit (ensembles, 10-crop).
    update_with_weights(h, classifier.module)
    return h.hexdigest()[:16]


def graph_fingerprint(graph: nn.Module) -> str:
    """sha256 of what a module computes: each submodule's type and plain settings, and the weights."""
    h = hashlib.sha256()
    for name, sub in graph.named_modules():
        kind = f"{type(sub).__module__}.{type(sub).__qualname__}"
        h.update(json.dumps([name, kind, _plain_attributes(sub)], default=str).encode())
    update_with_weights(h, graph)
    return h.hexdigest()


def _version(package: str) -> str:
    """An installed package's version, from its metadata (no import)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # e.g. onnxruntime-gpu: another name
        return str(getattr(importlib.import_module(package), "__version__", "?"))


def export_key(classifier: Classifier, chunk: int) -> str:
    """The cache key of ``classifier``'s export at batch ``chunk`` (sha256 hex)."""
    facts = {"format": EXPORT_FORMAT, "spec": classifier.spec, "chunk": int(chunk),
             "input_shape": list(classifier.input_shape), "outputs": classifier.outputs,
             "graph": graph_fingerprint(ScoringGraph(classifier)), "evofool": __version__,
             "torch": torch.__version__, "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


# --- the cache -----------------------------------------------------------------------------------

def cache_root() -> Path:
    """``$EVOFOOL_CACHE``, else ``$XDG_CACHE_HOME/evofool``, else ``~/.cache/evofool``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "evofool"


def export_path(classifier: Classifier, chunk: int) -> Path:
    """Where the export of ``classifier`` at batch ``chunk`` is cached (the spec, for people,
    then the key, which alone decides)."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", classifier.spec)[:40].strip("._") or "model"
    return cache_root() / "onnx" / f"{readable}-b{int(chunk)}-{export_key(classifier, chunk)[:32]}.onnx"


def export_onnx(classifier: Classifier, chunk: int, path: Path) -> None:
    """Exports ``classifier`` at a static batch of ``chunk`` to ``path``, atomically.

    Raises:
        RuntimeUnavailable: the model cannot be exported, or the file cannot be written.
    """
    graph = ScoringGraph(classifier).eval()
    device = next((t.device for t in graph.state_dict().values()), torch.device("cpu"))
    example = torch.zeros(int(chunk), *classifier.input_shape, device=device)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated (the dynamo one needs onnxscript),
            # and tracing warns about shapes read as Python ints (the 10 crops): the shape is static.
            warnings.simplefilter("ignore")
            with torch.inference_mode(False), torch.no_grad(), _native_stdout_silenced():
                torch.onnx.export(_exportable(graph), (example,), str(tmp), input_names=["x"],
                                  output_names=["y"], dynamo=False)
        os.replace(tmp, path)
    except Exception as exc:  # exporter errors share no base class; an unsupported op is one line
        raise RuntimeUnavailable(f"{classifier.spec} cannot be exported to ONNX ({first_line(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _native_stdout_silenced():
    """File descriptor 1 on the null device: the exporter's C++ log writes there (a failed
    export printed its whole graph, ~20 lines, before evofool's one note line). torch 2.13
    turns that log on for every export: it tests the function ``_jit_is_onnx_log_enabled``
    for truth instead of calling it. Python's own output is flushed first, C's before fd 1
    comes back, so nothing of anyone else's is lost or moved."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library to open by name (Windows)
        libc = None
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1, or no stdout: nothing to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
        finally:
            os.close(null)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _exportable(graph: ScoringGraph) -> nn.Module:
    """``graph``, scripted when a TorchScript module (``torchscript:``) is inside: the exporter
    cannot trace into a loaded ScriptModule that is not the top module ("not part of the
    active trace"), but exports a scripted whole."""
    if any(isinstance(m, torch.jit.ScriptModule) for m in graph.modules()):
        return torch.jit.script(graph)
    return graph


def open_graph(path: Path, classifier: Classifier, chunk: int, device: torch.device, threads: int):
    """An ``OnnxModule`` on the exported file: ``chunk`` × C×H×W [0, 1] pixels → raw outputs.

    Raises:
        RuntimeUnavailable: ONNX Runtime cannot load the file.
    """
    import onnxruntime

    from evofool.models.onnx import OnnxModule, file_sha256, open_session

    try:
        session = open_session(onnxruntime, path, device, threads=threads)
        # On the CPU, several chunks at once on one thread each (OnnxModule.run_streams).
        streams = int(threads) if device.type == "cpu" and threads and threads > 1 else 1
        stream_session = open_session(onnxruntime, path, device, threads=1) if streams > 1 else None
        return OnnxModule(session, classifier.spec, file_sha256(path), fixed_batch=int(chunk), device=device,
                          stream_session=stream_session, streams=streams)
    except EvofoolError as exc:
        raise RuntimeUnavailable(str(exc)) from None


def exported_graph(classifier: Classifier, chunk: int, device: torch.device, threads: int,
                   again: bool = False) -> tuple[object, bool]:
    """``(graph, exported)``: the cached export of ``classifier`` at batch ``chunk``, opened, and
    whether it was exported by this call (there was none, it was damaged, or ``again``).

    Raises:
        RuntimeUnavailable: onnx or onnxruntime missing, or an export that fails.
    """
    missing = missing_package()
    if missing is not None:
        raise RuntimeUnavailable(f"{PACKAGES[missing]} is not installed")
    path = export_path(classifier, chunk)
    if path.is_file() and not again:
        try:
            return open_graph(path, classifier, chunk, device, threads), False
        except RuntimeUnavailable:
            pass  # damaged: made again below
    export_onnx(classifier, chunk, path)
    return open_graph(path, classifier, chunk, device, threads), True


# --- the check -----------------------------------------------------------------------------------

def disagreement(torch_log_probs: torch.Tensor, onnx_log_probs: torch.Tensor,
                 tolerance: float | None = None) -> str | None:
    """Why ONNX Runtime's log-probabilities of the probe chunk are not torch's (None: they agree).

    Agreement: the same top-1 class for every image and max |Δ log-prob| ≤ ``tolerance``.
    """
    tolerance = TOLERANCE if tolerance is None else tolerance
    delta = float((torch_log_probs - onnx_log_probs).abs().max()) if torch_log_probs.numel() else 0.0
    flipped = int((torch_log_probs.argmax(1) != onnx_log_probs.argmax(1)).sum())
    if delta <= tolerance and flipped == 0:
        return None
    return (f"max |Δ log-prob| {delta:.1e} (at most {tolerance:.0e} allowed), top-1 class differs "
            f"for {flipped} of {torch_log_probs.shape[0]} images")


__all__ = ["LEGACY_RUNTIME", "RUNTIMES", "TOLERANCE", "RuntimeUnavailable", "ScoringGraph", "cache_root",
           "disagreement", "export_key", "export_onnx", "export_path", "exported_graph", "graph_fingerprint",
           "missing_package", "model_fingerprint", "scored_outside_torch", "state_digest", "update_with_weights"]
