"""Bare forward throughput of a model on each runtime: images/s at several batch sizes.

Usage::

    python benchmarks/forward.py [--model lenet-mnist] [--device cpu] [--repeats 7]
                                 [--batches 1 64 256 1024] [--runtimes torch onnxruntime]

Times the scoring function ``module(preprocess(x))`` on random [0, 1] images: torch
eager under ``torch.inference_mode``, and its ONNX export at that static batch run by
ONNX Runtime (``evofool.runtime``: what ``--runtime auto`` scores with on the CPU).
The runtimes are timed interleaved, repeat by repeat, in one process, so drift on a
shared machine hits them alike; the median of the repeats is reported, one table per
runtime, plus each runtime's speed relative to torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch

from evofool.models import DEFAULT_MODEL, load_model
from evofool.models.base import Classifier

BATCHES = (1, 64, 256, 1024)
RUNTIMES = ("torch", "onnxruntime")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(totals: dict[str, float], phase: str, fn: Callable, device: torch.device) -> Callable:
    """``fn`` that also adds its wall time (GPU work included) to ``totals[phase]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        totals[phase] += time.perf_counter() - start
        return out

    return wrapper


def bare_forwards(clf: Classifier, batch: int, device: torch.device, runtimes=RUNTIMES,
                  chunks: dict[str, int] | None = None) -> dict[str, Callable[[], object]]:
    """Runtime -> a call scoring ``batch`` random images (no softmax, no checks).

    Without ``chunks`` each call is one pass at batch ``batch``; with them, the images go
    in passes of ``chunks[runtime]`` (the last one padded), as ``BatchEvaluator`` sends
    them. ``onnxruntime`` exports (or takes from the cache) the classifier at that static batch.
    """
    from evofool import runtime

    calls: dict[str, Callable[[], object]] = {}
    for name in runtimes:
        chunk = chunks[name] if chunks else batch
        passes = -(-batch // chunk)
        x = torch.rand(chunk, *clf.input_shape, device=device)
        if name == "torch":
            module, pre = clf.module, clf.preprocess
            one = lambda module=module, pre=pre, x=x: module(pre(x))  # noqa: E731
        else:
            graph, _ = runtime.exported_graph(clf, chunk, device, torch.get_num_threads())
            if graph.streams > 1:
                # as the evaluator sends them: waves of ``streams`` chunks at once, one
                # thread each (the fastest way ONNX Runtime runs them on the CPU)
                waves = [min(graph.streams, passes - w) for w in range(0, passes, graph.streams)]
                calls[name] = (lambda graph=graph, x=x, waves=waves: [graph.run_streams([x] * k) for k in waves])
                continue
            one = lambda graph=graph, x=x: graph(x)  # noqa: E731
        calls[name] = (lambda one=one, passes=passes: [one() for _ in range(passes)])
    return calls


@torch.inference_mode()
def time_call(call: Callable[[], object], device: torch.device, min_seconds: float) -> float:
    """Seconds per call, looping until ``min_seconds`` have passed."""
    n, start = 0, time.perf_counter()
    while True:
        call()
        n += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


@torch.inference_mode()
def interleaved_rates(calls: dict[str, Callable[[], object]], batch: int, device: torch.device,
                      repeats: int, min_seconds: float = 0.2) -> dict[str, float]:
    """Median images/s per runtime; each repeat times every runtime once, in alternating order."""
    for call in calls.values():  # warm-up: allocator, kernel selection, lazy init
        for _ in range(3):
            call()
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            seconds[name].append(time_call(calls[name], device, min_seconds))
    return {name: batch / statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (see 'evofool models')")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    clf = load_model(args.model, device=device)
    clf.module.eval()
    rows = []
    for batch in args.batches:
        rates = interleaved_rates(bare_forwards(clf, batch, device, args.runtimes), batch, device, args.repeats)
        rows.append((batch, rates))
    # The load average says how far other processes skew CPU numbers on a shared machine.
    print(f"model {args.model} {clf.input_shape}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name in args.runtimes:
        print(f"\n{name}")
        print(f"{'batch':>6}  {'images/s':>12}  {'ms/batch':>9}  {'÷ torch':>8}")
        for batch, rates in rows:
            ratio = f"{rates[name] / rates['torch']:8.2f}" if "torch" in rates else f"{'-':>8}"
            print(f"{batch:>6}  {rates[name]:>12,.0f}  {1000 * batch / rates[name]:>9.3f}  {ratio}")


if __name__ == "__main__":
    main()
