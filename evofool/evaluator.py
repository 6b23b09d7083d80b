"""Batched scoring of images: one forward pass per chunk, no per-image Python work."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from evofool.devices import default_device, torch_threads
from evofool.errors import EvofoolError
from evofool.models.base import Classifier
# The one output contract lives with the models; re-exported here for the callers that
# score through the evaluator.
from evofool.models.outputs import PROBS, fitness_from_outputs, stable_log_softmax  # noqa: F401


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bfloat16`` autocast on a CUDA GPU that supports it, else ``float32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1]; float images are passed through as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


# How far outside [0, 1] a model's probability outputs may round: a softmax under bfloat16
# autocast reaches 1 + 2^-8.
PROB_MARGIN = 1e-2


def check_model_output(raw, classifier: Classifier, batch: int) -> None:
    """The model answered ``batch × K`` finite numbers (in [0, 1] where it declares
    probabilities), or a one-line error names it.

    Every forward pass is checked (it costs one pass over N×K numbers): a NaN must never
    reach an archive, a model whose output fits only batch 1 must not drop images, and
    logits declared as probabilities must not report confidences above 1.
    """
    spec, expected = classifier.spec, (batch, classifier.num_classes)
    if not isinstance(raw, torch.Tensor):
        raise EvofoolError(f"model {spec} returned {type(raw).__name__}, not a tensor of scores")
    if tuple(raw.shape) != expected:
        raise EvofoolError(f"model {spec} returned shape {tuple(raw.shape)} for a batch of {batch} "
                           f"images; expected {expected} (N images × {classifier.num_classes} classes)")
    if raw.is_complex() or raw.dtype == torch.bool:
        raise EvofoolError(f"model {spec} returned {str(raw.dtype).removeprefix('torch.')} scores; evofool needs "
                           f"real numbers (logits, probabilities or unit activations)")
    raw = raw.detach()
    # NumPy on CPU outputs: 6 against 33 µs for a 100×10 chunk (every chunk is checked).
    if not (raw.device.type == "cpu" and raw.dtype in (torch.float32, torch.float64)
            and bool(np.isfinite(raw.numpy()).all())):
        finite = torch.isfinite(raw)
        if not bool(finite.all()):
            bad = int((~finite).any(dim=1).sum())
            raise EvofoolError(f"model {spec} returned NaN or infinite scores for {bad} of {batch} "
                               f"images; evofool needs finite outputs")
    if classifier.outputs == PROBS and raw.numel():
        # Logits declared as probabilities would report confidences above 1 (float32
        # probabilities may overshoot 1 by rounding: a small margin).
        low, high = float(raw.min()), float(raw.max())
        if low < -PROB_MARGIN or high > 1 + PROB_MARGIN:
            raise EvofoolError(f"model {spec} declares its outputs probabilities, but returned values from "
                               f"{low:.4g} to {high:.4g}; declare \"outputs\": \"logits\" in its sidecar "
                               f"if they are logits")


def call_model(classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
    """``module(preprocess(x))``: the raw outputs of a batch of [0, 1] images, where a failure
    inside the user's model (or preprocessing) is one ``EvofoolError`` line naming the model
    and the batch, not a traceback from deep inside it (a model that takes only batch 1, one
    that raises after some calls). Out-of-memory errors pass unchanged: callers halve their
    chunk on them."""
    try:
        return classifier.module(classifier.preprocess(x))
    except (EvofoolError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # the user's code: any type
        shape = "×".join(map(str, x.shape[1:]))
        raise EvofoolError(f"model {classifier.spec} fails on a batch of {x.shape[0]} images of {shape} "
                           f"({_cause(exc)}); evofool scores images in batches") from exc


def _cause(exc: BaseException) -> str:
    """The line of an error that says what went wrong: TorchScript puts it last, after its trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# Forward-pass chunk sizes: the network always sees batches of exactly this many images
# (the last chunk padded with blank images), because CPU and GPU kernels are chosen by
# shape and thread count. Measured on AMD EPYC (Zen 4, AVX-512, torch 2.13, 2 cores):
# the same image scores the same bits alone, in a batch of 300, at any position, with 1 or
# 2 threads, for LeNet at chunks 50-256 and EfficientNet-Lite0 at chunks 25 and 50, but
# not at chunk 8 (LeNet) or 10 (EfficientNet): small GEMMs (the last Linear layer) split
# their reduction across threads. Populations (100-400) are multiples of both defaults.
SMALL_IMAGE_VALUES = 32 * 32 * 3   # up to CIFAR size: cheap images, larger chunks
CPU_CHUNK_SMALL = 100              # LeNet: 100 and 200 run at the same images/s
CPU_CHUNK_LARGE = 50               # 224x224 photo models: padding one image to 50 costs 1-2 s
CUDA_CHUNK = 200                   # a GPU wants large batches; still a divisor of 200/400/1000
# ONNX Runtime (evofool.runtime) on the CPU runs photo models fastest in small batches:
# EfficientNet-Lite0 at batch 10 vs 50, interleaved, 163 vs 112 images/s on 1 thread and
# 283 vs 232 on 2 (batch 1-5: about as fast as 10 on 1 thread, slower on 2). LeNet is
# as fast at 100 as at 10-25 and pays less per-call overhead, so small images keep 100.
# Its bits did not depend on the chunk at all here (LeNet 10/100, EfficientNet 5/10/50
# gave the same bits per image, at any position, on 1 or 2 threads); the chunk is fixed
# all the same, as for torch, so that no other CPU or build can make it matter.
ONNXRUNTIME_CPU_CHUNK_LARGE = 10


def forward_chunk(input_shape, device: torch.device, max_batch: int = 1024, runtime: str = "torch") -> int:
    """The fixed number of images per forward pass for a model of ``input_shape`` on
    ``device``, scored by ``runtime`` (``torch`` or ``onnxruntime``).

    One function for every caller (run, resume, Ray workers, transfer, export --verify,
    classify), so an image gets the same bits wherever it is scored; ``max_batch`` caps it.
    """
    if device.type == "cuda":
        natural = CUDA_CHUNK
    else:
        values = 1
        for d in input_shape:
            values *= int(d)
        large = ONNXRUNTIME_CPU_CHUNK_LARGE if runtime == "onnxruntime" else CPU_CHUNK_LARGE
        natural = CPU_CHUNK_SMALL if values <= SMALL_IMAGE_VALUES else large
    return max(1, min(int(max_batch), natural))


def _scored_by_onnxruntime(classifier: Classifier) -> bool:
    """An ``onnx:`` model (or a wrapper of one): its module runs an ONNX Runtime session."""
    from evofool.runtime import scored_outside_torch

    return scored_outside_torch(classifier)


@dataclass
class Scores:
    """Per-class scores of a batch: ``N×K`` float64 log-probabilities and probabilities."""

    log_probs: torch.Tensor
    probs: torch.Tensor


class BatchEvaluator:
    """Scores batches of images with a classifier, in fixed-shape chunks.

    Args:
        classifier: The model and its metadata.
        device: Where to run; ``None`` picks ``cuda`` if available, else CPU.
        max_batch: Largest chunk sent through the model at once (see ``forward_chunk``).
            Halved (and remembered) whenever a chunk runs out of device memory, so the
            batch sizes itself to memory.
        precision: ``float32``, or ``bfloat16``/``float16`` autocast for the forward pass
            (logits are then taken to float32 and the log-softmax done in float64);
            ``auto``: bfloat16 on a CUDA GPU that has it, float32 elsewhere.

    It scores with torch (``classifier.module(classifier.preprocess(x))``) until
    ``use_graph`` gives it an exported graph of that function (ONNX Runtime, see
    ``evofool.scoring.build_scoring``, which picks the runtime); ``runtime`` says which.

    Every forward pass gets exactly ``chunk`` images (the last chunk is padded with blank
    images whose scores are dropped), so scores do not depend on how a batch is split.
    Every chunk's output is checked: ``chunk × K`` finite values, else an ``EvofoolError``
    naming the model (a NaN must never reach the archive).
    """

    def __init__(self, classifier: Classifier, device: torch.device | str | None = None,
                 max_batch: int = 1024, precision: str = "auto") -> None:
        self.classifier = classifier
        self.device = torch.device(device) if device is not None else default_device()
        if int(max_batch) < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = forward_chunk(classifier.input_shape, self.device, max_batch)
        self._torch_chunk = self.max_batch  # the chunk again when a graph is dropped
        self.precision = resolve_precision(precision, self.device)
        self._buffer: torch.Tensor | None = None  # the chunk's float input, reused every call
        self.graph = None  # an exported scoring function for exactly ``chunk`` images, or None
        self.runtime = "onnxruntime" if _scored_by_onnxruntime(classifier) else "torch"
        classifier.module.to(self.device).eval()

    def use_graph(self, graph) -> None:
        """Scores with ``graph`` from now on: an ONNX Runtime module from [0, 1] pixels to raw
        outputs whose static batch (``graph.fixed_batch``) becomes the chunk; ``None``:
        torch again, at torch's chunk."""
        self.graph = graph
        if graph is None:
            self.max_batch = self._torch_chunk
        else:
            self.max_batch = getattr(graph, "fixed_batch", None) or self.chunk
        self._buffer = None
        outside = graph is not None or _scored_by_onnxruntime(self.classifier)
        self.runtime = "onnxruntime" if outside else "torch"

    @property
    def host_threads(self) -> int | None:
        """Torch threads for the work around an ONNX Runtime forward pass on the CPU: 1.

        ONNX Runtime has its own threads for the forward; torch's OpenMP workers, once
        woken by a parallel op (anything over 32k elements: a LeNet batch's pixels), spin
        for milliseconds afterwards and take those cores from ONNX Runtime's next pass.
        Measured (AMD EPYC, 2 cores, LeNet pop 200, blocks of 20 generations interleaved in
        one process): engine 10.0-11.2k evals/s with torch on 2 threads, 13.4-14.6k on 1,
        same bits. ``None`` (leave torch as it is) when torch does the forward.
        """
        if self.graph is not None or self.runtime == "onnxruntime":
            return 1 if self.device.type == "cpu" else None
        return None

    def record(self) -> dict:
        """What scores: runtime, chunk and precision, as a run folder records them."""
        return {"runtime": self.runtime, "chunk": self.chunk, "precision": self.precision}

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def chunk(self) -> int:
        """Images per forward pass (``max_batch`` after out-of-memory halvings)."""
        return self.max_batch

    def check_shape(self, images: torch.Tensor) -> None:
        """Raises ``EvofoolError`` unless ``images`` is ``N×C×H×W`` of the model's shape."""
        expected = tuple(self.classifier.input_shape)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise EvofoolError(
                f"images of shape {tuple(images.shape[1:])} do not fit model "
                f"{self.classifier.spec}, which takes C×H×W = {expected}")

    def _chunk_input(self, part: torch.Tensor, slot: int = 0, slots: int = 1) -> torch.Tensor:
        """``part`` as [0, 1] float32 in ``chunk`` rows of a reused buffer, blank rows after it.

        One buffer for the evaluator's life, of ``slots`` chunks (the chunks one wave of
        ONNX Runtime streams scores at once; ``slot`` is this one's): allocating a fresh
        240 MB float batch every generation (1,000 classes at 3×224×224) costs page
        faults, not just memory.
        """
        buffer = self._chunk_buffer(slots)[slot * self.chunk:(slot + 1) * self.chunk]
        n = part.shape[0]
        rows = buffer[:n]
        if part.dtype == torch.uint8:
            torch.div(part, 255.0, out=rows)  # float32(x) / 255 in one pass, as copy_ then div_
        else:
            rows.copy_(part)  # float → float32
        if n < buffer.shape[0]:
            buffer[n:].zero_()
        return buffer

    def _chunk_buffer(self, slots: int) -> torch.Tensor:
        shape = (slots * self.chunk, *self.classifier.input_shape)
        if self._buffer is None or tuple(self._buffer.shape) != shape:
            self._buffer = None
            try:
                self._buffer = torch.empty(shape, dtype=torch.float32, device=self.device)
            except (RuntimeError, MemoryError) as exc:  # the CPU allocator's error is a RuntimeError
                if isinstance(exc, torch.OutOfMemoryError):
                    raise  # CUDA: the caller halves its chunk
                size = 4 * math.prod(shape) / 2**30
                raise EvofoolError(f"cannot allocate {size:.1f} GiB for a forward pass of {shape[0]} images of "
                                   f"{'×'.join(map(str, shape[1:]))} on {self.device} (evofool run --max-batch "
                                   f"scores fewer at once)") from None
        return self._buffer

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class log-probabilities (``N×K`` float64) of uint8 or [0, 1] float images."""
        with torch_threads(self.host_threads), torch.inference_mode():
            self.check_shape(images)
            if self._in_streams(images.shape[0]):
                raw = self._raw_in_streams(images)
            else:
                raw = self._raw_in_chunks(images)
            if not raw:
                return torch.empty(0, self.num_classes, device=self.device, dtype=torch.float64)
            return fitness_from_outputs(torch.cat(raw), self.classifier.outputs)

    @property
    def streams(self) -> int:
        """How many chunks are scored at once (``OnnxModule.map_streams``); 1: one after the other."""
        return getattr(self.graph, "streams", 1)

    def _in_streams(self, n: int) -> bool:
        """Whether ``n`` images go through the streams: more than one chunk, more than one stream."""
        return self.streams > 1 and n > self.chunk

    def render_and_score(self, render, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and log-probabilities of ``n`` images that ``render(start, stop)`` makes
        (``stop - start`` uint8 images), each stream rendering the chunks it scores
        (``_stream_chunks``: one torch thread and one ONNX Runtime thread each), so no core
        waits while the other renders or scores. Measured (AMD EPYC Zen 1, 2 cores,
        EfficientNet-Lite0 CPPN, pop 100, two engines alternating generation by generation
        in one process): 2.6 against 3.2 s a generation over the first six, 2.56 against
        2.60 (median) over fourteen. The images and scores are those of rendering the batch
        and then scoring it.
        """
        if not self._in_streams(n):
            images = render(0, n)
            return images, self.log_probs(images)
        parts = self._stream_chunks(render, n)
        with torch_threads(self.host_threads), torch.inference_mode():
            images = torch.cat([images for images, _ in parts])
            return images, fitness_from_outputs(torch.cat([raw for _, raw in parts]), self.classifier.outputs)

    def _stream_chunks(self, make, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, raw outputs)`` of each chunk of ``n`` images, in order, ``make(start,
        stop)`` giving a chunk's images: the graph's single-threaded streams each take the
        next chunk not yet taken (render times vary with the genomes: a fixed share left
        one stream waiting for the other) and make, convert, score and check it on their
        own thread. Which stream does a chunk changes no bits (ONNX Runtime's bits do not
        depend on its thread count here), so this is exactly one chunk after the other."""
        streams, chunk = self.streams, self.chunk
        bounds = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
        next_chunk = itertools.count()

        def stream(slot: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
            done = []
            with torch.inference_mode():
                for i in next_chunk:
                    if i >= len(bounds):
                        break
                    images = make(*bounds[i])
                    self.check_shape(images)
                    raw = self.graph.run_one(self._chunk_input(images.to(self.device), slot, streams))
                    check_model_output(raw, self.classifier, chunk)
                    done.append((i, images, raw[:images.shape[0]]))
            return done

        self._chunk_buffer(streams)  # made here, not by the streams at once
        with torch_threads(1):
            results = self.graph.map_streams(stream, min(streams, len(bounds)))
        return [(images, raw) for _, images, raw in sorted((item for part in results for item in part),
                                                           key=lambda item: item[0])]

    def _raw_in_chunks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The raw outputs of ``images``, one chunk after the other, padding rows dropped."""
        out = []
        start = 0
        while start < images.shape[0]:
            part = images[start:start + self.chunk].to(self.device, non_blocking=True)
            try:
                raw = self._forward(self._chunk_input(part))
            except torch.OutOfMemoryError:
                if self.chunk == 1 or self.graph is not None:  # a graph takes its one shape only
                    raise
                self.max_batch = max(1, self.chunk // 2)
                self._buffer = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(f"out of device memory: evaluating in chunks of {self.max_batch} from now on",
                              RuntimeWarning, stacklevel=2)
                continue
            check_model_output(raw, self.classifier, self.chunk)
            start += part.shape[0]
            out.append(raw[:part.shape[0]])
        return out

    def _raw_in_streams(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The raw outputs of ``images``, chunk by chunk on the graph's streams (``_stream_chunks``)."""
        return [raw for _, raw in self._stream_chunks(lambda start, stop: images[start:stop], images.shape[0])]

    def probe(self) -> None:
        """Scores one chunk of random images, so a model answering NaN, or a shape that fits
        only batch 1, is a one-line error before a run folder is made (not mid-run).

        Draws from its own generator: the run's random streams are untouched.
        """
        self.log_probs(self.probe_images())

    def probe_images(self) -> torch.Tensor:
        """One chunk of uint8 noise, the same every call (seed 0 of its own generator)."""
        return torch.randint(0, 256, (self.chunk, *self.classifier.input_shape), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(0))

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs for one chunk of [0, 1] images, at the chosen precision."""
        if self.graph is not None:
            return self.graph(chunk)
        if self.precision == "float32":
            return call_model(self.classifier, chunk)
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return call_model(self.classifier, chunk)

    def evaluate(self, images: torch.Tensor) -> Scores:
        """Log-probabilities and probabilities (softmax confidences) of a batch."""
        logp = self.log_probs(images)
        return Scores(log_probs=logp, probs=logp.exp())
