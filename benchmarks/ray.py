"""Ray evaluation throughput: 1 and 2 local Ray workers against the in-process evaluator.

Runs the same engine (same seed) with the local scorer and with ``RayEvaluator`` on a
private local Ray instance, and prints evaluations/s over whole generations (vary +
render + score + archive update, first generation excluded as warm-up; ``local-1t``
is the local scorer with one torch thread), the median
time per generation spent in scoring, and the workers' start-up time. It also checks
that every mode ends with the same archive, bit for bit.

    python benchmarks/ray.py [--model lenet-mnist] [--encoding direct] [--population 200]
                             [--generations 30] [--workers 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# This file is called ray.py: with its folder first on sys.path, "import ray" would
# import this script instead of Ray (and Ray ships the folder to its workers too).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.config import RunConfig
from evofool.encodings import make_encoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator
from evofool.models import load_model


class TimedScorer:
    """Wraps a scorer and records the seconds of each call."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.seconds: list[float] = []

    def __call__(self, genomes):
        t = time.perf_counter()
        out = self.scorer(genomes)
        self.seconds.append(time.perf_counter() - t)
        return out


def run(config: RunConfig, make_scorer) -> dict:
    """One benchmark run; ``make_scorer(encoding, engine)`` returns the scorer to time."""
    torch.manual_seed(config.seed)
    classifier = load_model(config.model)
    evaluator = BatchEvaluator(classifier, device="cpu")
    encoding = make_encoding(config.encoding, classifier.input_shape, "cpu", **config.encoding_params)
    archive = ClassArchive(classifier.num_classes, encoding)
    engine = Engine(encoding, evaluator, archive, config.population, np.random.default_rng(config.seed))
    t = time.perf_counter()
    timed = TimedScorer(make_scorer(encoding, engine))
    start_s = time.perf_counter() - t
    engine.score = timed
    engine.step()  # warm-up generation (first calls, allocations)
    t = time.perf_counter()
    for _ in range(config.generations - 1):
        engine.step()
    seconds = time.perf_counter() - t
    return {"evals_per_s": round((config.generations - 1) * config.population / seconds, 1),
            "score_ms_per_gen": round(1000 * statistics.median(timed.seconds[1:]), 2),
            "start_s": round(start_s, 2), "scorer": timed.scorer,
            "archive": archive.log_probs.numpy().copy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet-mnist")
    ap.add_argument("--encoding", default="direct")
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

    import ray

    from evofool.distributed import RayEvaluator, connect, local_cpus, plan_workers

    base = RunConfig(model=args.model, encoding=args.encoding, population=args.population,
                     generations=args.generations, seed=args.seed, device="cpu")
    results = {"local": run(base, lambda encoding, engine: engine.score_locally)}
    # The same with one torch thread: on a busy machine, a 2-thread forward pass can lose
    # more to thread contention than Ray's workers (1 thread each) lose to overhead.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results["local-1t"] = run(base, lambda encoding, engine: engine.score_locally)
    torch.set_num_threads(threads)
    connect("local", RunConfig(workers=max(args.workers)))
    try:
        for n in args.workers:
            config = RunConfig(**{**base.to_dict(), "ray": "local", "workers": n})
            plan = plan_workers(config, ray.nodes())
            results[f"ray-{n}"] = run(config, lambda encoding, engine: RayEvaluator(config, encoding, plan))
            results[f"ray-{n}"]["scorer"].close()
            results[f"ray-{n}"]["threads_per_worker"] = plan.threads
    finally:
        ray.shutdown()
    reference = results["local"]["archive"]
    for r in results.values():
        r["same_archive"] = bool(np.array_equal(r.pop("archive"), reference))
        r.pop("scorer")
    out = {"model": args.model, "encoding": args.encoding, "population": args.population,
           "generations": args.generations, "cpus": local_cpus(),
           "local_torch_threads": torch.get_num_threads(), "results": results}
    if args.json:
        print(json.dumps(out))
        return
    print(f"model {args.model}, encoding {args.encoding}, population {args.population}, "
          f"{args.generations} generations, {out['cpus']} CPUs")
    print(f"{'mode':8} {'evals/s':>9} {'score ms/gen':>13} {'start s':>8} {'vs local':>9}  same archive")
    for name, r in results.items():
        ratio = r["evals_per_s"] / results["local"]["evals_per_s"]
        print(f"{name:8} {r['evals_per_s']:9.0f} {r['score_ms_per_gen']:13.2f} {r['start_s']:8.2f} "
              f"{ratio:9.2f}  {r['same_archive']}")


if __name__ == "__main__":
    main()
