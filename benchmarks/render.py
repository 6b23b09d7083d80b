"""Benchmark: CPPN rendering, batched vs one genome at a time.

Renders a batch of genomes with mixed topologies (random genomes mutated 0..30 times,
like an archive mid-run) at MNIST (1×28×28) and ImageNet (3×224×224) sizes, once as one
batched call and once as a loop calling the same renderer with B=1, and prints a table.

    python benchmarks/render.py [--batch 200] [--threads 1] [--dtype float64] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from evofool.encodings.cppn import CPPNEncoding


def mixed_population(enc: CPPNEncoding, n: int, seed: int, max_rounds: int = 30) -> list:
    """``n`` genomes, genome i mutated ``U{0..max_rounds}`` times."""
    rng = np.random.default_rng(seed)
    pop = enc.random(n, rng)
    rounds = rng.integers(0, max_rounds + 1, size=n)
    for r in range(max_rounds):
        idx = np.flatnonzero(rounds > r)
        for i, child in zip(idx, enc.vary(enc.take(pop, idx), rng, r)):
            pop[i] = child
    return pop


def best_time(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs, in seconds (the machine may be shared)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", default="1x28x28,3x224x224")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} batch={args.batch}")
    header = f"{'image':>10} {'nodes':>6} {'links':>6} {'batched g/s':>12} {'one-by-one g/s':>15} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for spec in args.shapes.split(","):
        shape = tuple(int(s) for s in spec.split("x"))
        enc = CPPNEncoding(shape, device=args.device, render_dtype=args.dtype)
        pop = mixed_population(enc, args.batch, seed=0)
        enc.render(pop[:2])  # warm-up (input planes cache, allocator)
        big = shape[1] * shape[2] > 10_000
        repeats = 1 if big else args.repeats
        batched = best_time(lambda: enc.render(pop), repeats)
        single = best_time(lambda: [enc.render([g]) for g in pop], repeats)
        print(f"{spec:>10} {np.mean([g.n_nodes for g in pop]):6.1f} {np.mean([g.n_links for g in pop]):6.1f} "
              f"{len(pop) / batched:12.1f} {len(pop) / single:15.1f} {single / batched:8.1f}x")


if __name__ == "__main__":
    main()
