"""``onnx:PATH``: any ONNX classifier, scored by ONNX Runtime, plus a JSON sidecar.

Models trained in TensorFlow, JAX or anything else arrive as ONNX files; evolution only
needs scores, so evofool runs them as they are. The sidecar is the ``torchscript:`` one
(``PATH + ".json"``, or ``PATH`` with its suffix replaced by ``.json``; keys
``input_shape``, ``class_names``, ``mean``, ``std``, ``scale``, ``outputs``), and the
preprocessing ``(x * scale - mean) / std`` runs in torch before the session.

The graph must take one float ``N×C×H×W`` input and give ``N×K`` scores as its first
output (later outputs are ignored). A fixed batch dimension (an export at batch 1 or
100) is fine: batches are fed in sub-batches of that size.

ONNX Runtime is black-box for torch: no gradients flow through it, so ``ascent``,
``perturb`` and ``unit:`` refuse these models (``require_gradients``) with one line.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evofool.errors import EvofoolError, first_line
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize
from evofool.models.torchscript import find_sidecar, read_sidecar

# A single ONNX protobuf cannot exceed 2 GiB (larger models keep weights in external
# data files, which ONNX Runtime reads beside the model); anything bigger is not a model.
MAX_ONNX_BYTES = 2 * 1024 ** 3
INSTALL_HINT = "onnx: models need ONNX Runtime: pip install 'evofool[onnx]'"
SCORED_BY = "ONNX Runtime"
# float16 scores are taken to float32; float64 ones (an exported ensemble's or 10-crop
# probabilities) stay float64, so confidences near 1 keep their resolution.
SCORE_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")


# --- the black-box refusal (ascent, perturb, unit:) ----------------------------------------------

def is_differentiable(classifier: Classifier) -> bool:
    """False for a classifier marked ``meta["differentiable"] = False``, or one with such a
    module inside (an ``ensemble:`` or ``smooth:`` of ONNX models does not copy the meta)."""
    if classifier.meta.get("differentiable", True) is False:
        return False
    return not any(getattr(m, "differentiable", True) is False for m in classifier.module.modules())


def require_gradients(classifier: Classifier, command: str, needs: str = "gradients",
                      instead: str = "use evofool run, or a torchscript: copy of the model") -> None:
    """Raises a one-line ``EvofoolError`` if ``command`` cannot differentiate ``classifier``.

    Example: ``ascent needs gradients; onnx:m.onnx is scored by ONNX Runtime (black-box):
    use evofool run, or a torchscript: copy of the model``.
    """
    if not is_differentiable(classifier):
        scored_by = classifier.meta.get("scored_by", SCORED_BY)
        raise EvofoolError(f"{command} needs {needs}; {classifier.spec} is scored by {scored_by} "
                           f"(black-box): {instead}")


# --- the module -------------------------------------------------------------------------------

def file_sha256(file: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (a model may be 2 GiB)."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxModule(nn.Module):
    """An ONNX Runtime session as a torch module: ``N×C×H×W`` float32 → ``N×K`` float32
    (float64 when the graph gives float64).

    It has no parameters; ``.to(device)`` records the device (the session was built for
    it at load time) and outputs land on the input's device. Works under
    ``torch.inference_mode()``; a forward pass that needs a gradient is an error.

    Args:
        session: An ``onnxruntime.InferenceSession`` of a validated graph.
        spec: The model spec, for error messages.
        digest: sha256 of the model file (``weights_digest``).
        fixed_batch: The graph's static batch size, or ``None`` when it takes any.
        device: The device the session was built for (``.to`` updates it).
        stream_session: A single-threaded session on the same file, for the streams.
        streams: How many batches ``run_streams``/``map_streams`` score at once (one thread each).
    """

    differentiable = False  # see is_differentiable

    def __init__(self, session, spec: str, digest: str, fixed_batch: int | None,
                 device: torch.device | str = "cpu", stream_session=None, streams: int = 1) -> None:
        super().__init__()
        self.session = session
        self.stream_session = stream_session
        self.streams = int(streams) if stream_session is not None else 1
        self._pool = None  # the streams' threads, started at the first map_streams
        self.spec = spec
        self.digest = digest
        self.fixed_batch = fixed_batch
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            # e.g. the export of a model that ignores its input has no input at all
            raise EvofoolError(f"ONNX model {spec} has {len(inputs)} inputs and {len(outputs)} outputs; "
                               f"evofool feeds it one batch of images and reads its first output")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.device = torch.device(device)

    def to(self, *args, **kwargs) -> "OnnxModule":
        """Records the device of ``.to(device)`` / ``.to(tensor)``; a dtype changes nothing."""
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, torch.Tensor):
            target = target.device
        if isinstance(target, (str, int, torch.device)):
            self.device = torch.device(target)
        return super().to(*args, **kwargs)

    def weights_digest(self) -> str:
        """sha256 of the model file: the weights identity ``state_dict`` cannot give."""
        return self.digest

    def run_streams(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """The outputs of several CPU batches, scored at the same time, each on one thread.

        On the CPU, ``streams`` single-threaded passes at once beat one pass on
        ``streams`` threads: no thread hand-offs inside the graph. Measured (AMD EPYC Zen 4,
        2 cores, interleaved in one process): LeNet 2 × 100 images 17.1k images/s against
        15.0k, EfficientNet-Lite0 10 × 10 images 174 against 155; the same bits. ONNX
        Runtime releases the GIL while it runs, so Python threads are enough.
        """
        if self.streams < 2 or len(batches) < 2:
            return [self(b) for b in batches]
        return self.map_streams(lambda i: self.run_one(batches[i]), len(batches))

    def run_one(self, batch: torch.Tensor) -> torch.Tensor:
        """One batch on the single-threaded session (from any of the streams' threads)."""
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self._run(array, self.stream_session)).to(self.device)

    def map_streams(self, fn, n: int) -> list:
        """``[fn(0), ..., fn(n - 1)]``, at most ``streams`` at once; the calling thread runs
        ``fn(0)`` itself (one hand-off fewer). The first error is raised after all finish."""
        if n > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.streams - 1, thread_name_prefix="evofool-onnx")
        futures = [self._pool.submit(fn, i) for i in range(1, n)]
        try:
            first = fn(0)
        finally:
            wait(futures)  # every stream has stopped before an error leaves
        return [first, *(f.result() for f in futures)]

    def _run(self, batch: np.ndarray, session=None) -> np.ndarray:
        try:
            (out,) = (session or self.session).run([self.output_name], {self.input_name: batch})
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            shape = "×".join(map(str, batch.shape))
            raise EvofoolError(f"model {self.spec} fails in ONNX Runtime on a {shape} input "
                               f"({first_line(exc)})") from None
        out = np.asarray(out)
        return out if out.dtype == np.float64 else out.astype(np.float32, copy=False)

    def _run_fixed(self, x: np.ndarray) -> np.ndarray:
        """``x`` in sub-batches of exactly ``fixed_batch`` rows (any batch when it is ``None``);
        the last one padded with blank rows, whose outputs are dropped."""
        n = x.shape[0]
        b = self.fixed_batch or n
        parts = []
        for start in range(0, n, b):
            part = x[start:start + b]
            if part.shape[0] < b:
                pad = np.zeros((b - part.shape[0], *x.shape[1:]), dtype=np.float32)
                part = np.concatenate([part, pad])
            parts.append(self._run(part)[:min(b, n - start)])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise EvofoolError(f"model {self.spec} is scored by {SCORED_BY} (black-box): "
                               "no gradients flow through it; use a torchscript: copy of the model")
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        if batch.shape[0] == 0:  # no rows: ask the graph for one blank row, to know K
            out = self._run_fixed(np.zeros((1, *batch.shape[1:]), dtype=np.float32))[:0]
        elif self.fixed_batch is None:
            out = self._run(batch)
        else:
            out = self._run_fixed(batch)
        return torch.from_numpy(out).to(x.device)


# --- loading ------------------------------------------------------------------------------------

def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EvofoolError(INSTALL_HINT) from None
    return onnxruntime


def _check_file(file: Path) -> None:
    """A regular file of at most ``MAX_ONNX_BYTES`` (no FIFO, device or folder)."""
    try:
        info = file.stat()
    except OSError:
        raise EvofoolError(f"ONNX model file {file} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise EvofoolError(f"ONNX model {file} is not a regular file")
    if info.st_size > MAX_ONNX_BYTES:
        raise EvofoolError(f"ONNX model {file} is {info.st_size / 1024 ** 3:.1f} GiB; at most 2 GiB "
                           "(keep larger weights in external data files)")


def _sidecar(file: Path) -> dict:
    try:
        side = find_sidecar(file)
    except EvofoolError:  # its message names TorchScript
        raise EvofoolError(f"ONNX model {file} has no metadata sidecar: create {file}.json "
                           "with input_shape and class_names") from None
    return read_sidecar(side)


def _providers(ort, device: torch.device) -> list:
    """CUDA first when the model is for a GPU and this ONNX Runtime build has it, else the CPU."""
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(ort, file: Path, device: torch.device, threads: int | None = None):
    """An ``InferenceSession`` on ``file`` with ``threads`` intra-op threads (default: torch's
    thread count); a one-line error if it is not ONNX."""
    options = ort.SessionOptions()
    # Same threads as torch (OMP_NUM_THREADS, --threads, a Ray actor's share), so an ONNX
    # model neither oversubscribes shared cores nor idles the ones it was given.
    options.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle ONNX Runtime workers spin by default, and between two forward passes the engine's
    # torch work (mutation, archive) runs on the same cores: at 2 threads the spinning made a
    # LeNet run 1.4x SLOWER than torch scoring (benchmarks/engine.py, AMD EPYC 2 cores). The
    # arithmetic is the same either way, so the bits do not change.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Fatal only: its warnings and its own error logs would break one-line CLI output (evofool
    # reports a failing run in its error line).
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(str(file), sess_options=options, providers=_providers(ort, device))
    except Exception as exc:  # InvalidProtobuf, Fail, NotImplemented...: pybind types, no common base
        raise EvofoolError(f"{file} is not an ONNX model ONNX Runtime can load ({first_line(exc)})") from None


def _dims(shape) -> str:
    return "×".join(str(d) if isinstance(d, int) else "?" for d in shape)


def check_signature(session, file: Path, meta: dict) -> int | None:
    """Checks the graph's input and first output against the sidecar; returns the fixed batch.

    Raises:
        EvofoolError: not one float input of rank 4 whose static C/H/W match
            ``input_shape``; a first output not of rank 2, or whose static class count is
            not ``len(class_names)``.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise EvofoolError(f"{file} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                           "evofool feeds one N×C×H×W image input")
    inp, out = inputs[0], outputs[0]
    if inp.type != "tensor(float)":
        raise EvofoolError(f"{file}: input {inp.name!r} is {inp.type}; evofool feeds tensor(float)")
    expected = list(meta["input_shape"])
    if len(inp.shape) != 4:
        raise EvofoolError(f"{file}: input {inp.name!r} has shape {_dims(inp.shape)} (rank "
                           f"{len(inp.shape)}); evofool feeds N×{_dims(expected)} images (rank 4)")
    static = [(d, e) for d, e in zip(inp.shape[1:], expected) if isinstance(d, int)]
    if any(d != e for d, e in static):
        hint = " (channels-last? export it as N×C×H×W)" if list(inp.shape[1:]) == expected[1:] + expected[:1] else ""
        raise EvofoolError(f"{file}: input {inp.name!r} takes N×{_dims(inp.shape[1:])} but its sidecar "
                           f"says input_shape {expected}{hint}")
    if out.type not in SCORE_TYPES:  # e.g. a sequence of maps (sklearn's ZipMap)
        raise EvofoolError(f"{file}: output {out.name!r} is {out.type}; evofool needs a float tensor "
                           "of N×K class scores")
    if len(out.shape) != 2:
        raise EvofoolError(f"{file}: output {out.name!r} has shape {_dims(out.shape)}; evofool needs "
                           f"N×K class scores (rank 2)")
    classes = len(meta["class_names"])
    if isinstance(out.shape[1], int) and out.shape[1] != classes:
        raise EvofoolError(f"{file}: output {out.name!r} has {out.shape[1]} classes but its sidecar "
                           f"lists {classes} class names")
    batch = inp.shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def _probe(module: OnnxModule, norm: Normalize, meta: dict, file: Path) -> None:
    """Two blank images through the model now, so a graph that fails at run time (a symbolic
    class count that is wrong, a "dynamic" batch that only takes 1) fails at load, clearly."""
    probe = torch.zeros(2, *meta["input_shape"])
    with torch.inference_mode():
        out = module(norm(probe))
    classes = len(meta["class_names"])
    if tuple(out.shape) != (2, classes):
        raise EvofoolError(f"{file} outputs {tuple(out.shape)} for 2 images but its sidecar "
                           f"lists {classes} class names")


def load_onnx(path: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """Loads ``onnx:PATH``.

    Raises:
        EvofoolError: ONNX Runtime not installed, a missing or oversized file or sidecar,
            a file ONNX Runtime cannot load, or a graph that does not fit the sidecar.
    """
    ort = _import_onnxruntime()
    file = Path(path)
    device = torch.device(device)
    _check_file(file)
    meta = _sidecar(file)
    digest = file_sha256(file)
    session = open_session(ort, file, device)
    fixed_batch = check_signature(session, file, meta)
    module = OnnxModule(session, spec, digest, fixed_batch, device)
    norm = Normalize(meta["mean"], meta["std"], meta["scale"])
    _probe(module, norm, meta, file)
    return Classifier(spec=spec, module=module, input_shape=tuple(meta["input_shape"]),
                      class_names=[str(n) for n in meta["class_names"]], preprocess=norm,
                      outputs=meta["outputs"],
                      meta={"file": str(file), "sha256": digest, "differentiable": False,
                            "scored_by": SCORED_BY, "providers": session.get_providers(), **meta})


__all__ = ["OnnxModule", "is_differentiable", "load_onnx", "require_gradients"]
