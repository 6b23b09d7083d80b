"""Bare forward throughput of a model: images/s at several batch sizes.

Usage::

    python benchmarks/forward.py [--model lenet-mnist] [--device cpu] [--repeats 7]

Times ``module(preprocess(x))`` under ``torch.inference_mode`` on random [0, 1]
images, after a warm-up, and reports the median of several repeats (the median
shrugs off noise from other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from evofool.models import DEFAULT_MODEL, load_model

BATCHES = (1, 64, 256, 1024)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def images_per_second(clf, batch: int, device: torch.device, repeats: int,
                      min_seconds: float = 0.2) -> float:
    """Median images/s over ``repeats`` timings, each looping until ``min_seconds`` pass."""
    x = torch.rand(batch, *clf.input_shape, device=device)
    for _ in range(3):  # warm-up: allocator, kernel selection, lazy init
        clf.module(clf.preprocess(x))
    sync(device)
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            clf.module(clf.preprocess(x))
            n += 1
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(n * batch / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (see 'evofool models')")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    args = parser.parse_args()

    device = torch.device(args.device)
    clf = load_model(args.model, device=device)
    # The load average says how far other processes skew CPU numbers on a shared machine.
    print(f"model {args.model} {clf.input_shape}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'batch':>6}  {'images/s':>12}  {'ms/batch':>9}")
    for batch in args.batches:
        rate = images_per_second(clf, batch, device, args.repeats)
        print(f"{batch:>6}  {rate:>12,.0f}  {1000 * batch / rate:>9.3f}")


if __name__ == "__main__":
    main()
