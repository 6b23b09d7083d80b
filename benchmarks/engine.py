"""Engine throughput and speed-to-target on the embedded MNIST LeNet.

Measures in ONE process:
  (a) bare forward images/s of the model at the run's batch size,
  (b) engine evaluations/s over a full run (vary + render + one forward pass + archive update + stats),
      (a) and (b) interleaved, one bare pass per generation, so machine drift hits both alike,
  (c) a naive DEAP loop: DEAP's own mutPolynomialBounded on list genomes and one
      ``toolbox.evaluate`` (batch-1 forward pass) per individual,
and prints the ratios b/a and b/c; then, for seeds 0-4, the generations and seconds until
every class is at >= 99.99 % (the median is what the issue's target refers to).

    python benchmarks/engine.py [--population 200] [--generations 200] [--seeds 0 1 2 3 4]
                                [--throughput-generations 600]
                                [--param eta=15 ...] [--selection uniform] [--recombine off]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import numpy as np
import torch
from deap import base, creator, tools

from evofool.archive import ClassArchive
from evofool.config import RunConfig
from evofool.encodings import make_encoding
from evofool.engine import Engine
from evofool.evaluator import BatchEvaluator
from evofool.job import make_recombination
from evofool.models import load_model

# DEAP's creator classes live at module level, made once (never inside functions).
creator.create("FitnessMaxBench", base.Fitness, weights=(1.0,))
creator.create("IndividualBench", list, fitness=creator.FitnessMaxBench)


SELECTION = RunConfig().selection  # the run's default parent choice; --selection overrides
RECOMBINE = RunConfig().recombine  # the run's default step recombination; --recombine overrides


def make_engine(model, evaluator, encoding_name, params, population, seed) -> Engine:
    enc = make_encoding(encoding_name, model.input_shape, "cpu", **params)
    return Engine(enc, evaluator, ClassArchive(model.num_classes, enc), population, np.random.default_rng(seed),
                  selection=SELECTION, recombination=make_recombination(RECOMBINE, enc))


def engine_and_bare_throughput(model, evaluator, encoding, params, population, generations,
                               seed=0) -> tuple[float, float]:
    """(bare forward images/s, engine evaluations/s), measured interleaved.

    Each engine generation (select + vary + render + one forward pass + archive update +
    statistics) is paired with one bare forward pass of the plain model on a batch of the
    same size (inference mode, preprocessing included, no softmax work), so both see the
    same machine: on a shared 2-core VM, measuring one after the other lets drift of
    ±10 % into the ratio.
    """
    engine = make_engine(model, evaluator, encoding, params, population, seed)
    engine.step()  # warm-up generation (allocations, first-call overheads)
    x = torch.rand(population, *evaluator.classifier.input_shape)
    module, pre = evaluator.classifier.module, evaluator.classifier.preprocess
    with torch.inference_mode():
        for _ in range(5):
            module(pre(x))
    bare = steps = 0.0
    for _ in range(generations - 1):
        t0 = time.perf_counter()
        with torch.inference_mode():
            module(pre(x))
        t1 = time.perf_counter()
        engine.step()
        t2 = time.perf_counter()
        bare += t1 - t0
        steps += t2 - t1
    n = (generations - 1) * population
    return n / bare, n / steps


def time_to_target(model, evaluator, encoding, params, population, max_generations, seed,
                   target=0.9999) -> tuple[int | None, float]:
    engine = make_engine(model, evaluator, encoding, params, population, seed)
    t = time.perf_counter()
    while engine.generation < max_generations:
        engine.step()
        if np.all(engine.archive.confidences() >= target):
            return engine.generation, time.perf_counter() - t
    return None, time.perf_counter() - t


def naive_deap(model, evaluator, population, generations, seed=0) -> float:
    """evaluations/s of a textbook DEAP loop: per-individual evaluate, DEAP's mutation."""
    random.seed(seed)
    n_genes = int(np.prod(model.input_shape))
    shape = model.input_shape
    toolbox = base.Toolbox()
    toolbox.register("attr", random.random)
    toolbox.register("individual", tools.initRepeat, creator.IndividualBench, toolbox.attr, n_genes)
    toolbox.register("mutate", tools.mutPolynomialBounded, eta=15.0, low=0.0, up=1.0, indpb=0.1)

    def evaluate(ind):
        x = torch.tensor(ind, dtype=torch.float32).view(1, *shape)
        return (evaluator.log_probs(x)[0],)

    toolbox.register("evaluate", evaluate)
    champions: dict[int, list] = {}
    t = time.perf_counter()
    evals = 0
    for gen in range(generations):
        if not champions:
            pop = [toolbox.individual() for _ in range(population)]
        else:
            keys = list(champions)
            pop = [toolbox.mutate(creator.IndividualBench(champions[random.choice(keys)][1]))[0]
                   for _ in range(population)]
        for ind in pop:
            (logp,) = toolbox.evaluate(ind)
            evals += 1
            for k in range(len(logp)):
                if k not in champions or logp[k] > champions[k][0]:
                    champions[k] = (float(logp[k]), list(ind))
    return evals / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet-mnist")
    ap.add_argument("--encoding", default="direct")
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--throughput-generations", type=int, default=600,
                    help="generations of the interleaved throughput measurement (b/a)")
    ap.add_argument("--naive-generations", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--param", action="append", default=[], help="encoding parameter NAME=VALUE")
    ap.add_argument("--selection", default=RunConfig().selection, choices=["lagging", "uniform"])
    ap.add_argument("--recombine", default=RunConfig().recombine, help="auto, off or step lengths 2,4,8,16")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()
    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    global SELECTION, RECOMBINE
    SELECTION, RECOMBINE = args.selection, args.recombine
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_model(args.model)
    evaluator = BatchEvaluator(model, device="cpu")
    out: dict = {"model": args.model, "encoding": args.encoding, "population": args.population,
                 "params": params, "selection": SELECTION, "recombine": RECOMBINE, "threads": torch.get_num_threads()}
    if not args.skip_throughput:
        a, b = engine_and_bare_throughput(model, evaluator, args.encoding, params, args.population,
                                          args.throughput_generations)
        c = naive_deap(model, evaluator, args.population, args.naive_generations)
        out.update(bare_forward_per_s=a, engine_evals_per_s=b, naive_deap_evals_per_s=c,
                   engine_over_bare=b / a, engine_over_naive=b / c)
    runs = [time_to_target(model, evaluator, args.encoding, params, args.population, args.generations, s)
            for s in args.seeds]
    out["seeds"] = {s: {"generations": g, "seconds": round(t, 3)} for s, (g, t) in zip(args.seeds, runs)}
    reached = [g for g, _ in runs if g is not None]
    if len(reached) == len(runs) and runs:
        out["median_generations"] = statistics.median(reached)
        out["median_seconds"] = round(statistics.median(t for _, t in runs), 3)
    if args.json:
        print(json.dumps(out))
        return
    print(f"model {args.model}, encoding {args.encoding}, population {args.population}, "
          f"params {params}, selection {SELECTION}, recombine {RECOMBINE}, torch threads {out['threads']}")
    if not args.skip_throughput:
        print(f"(a) bare forward           {out['bare_forward_per_s']:10.0f} images/s (batch {args.population})")
        print(f"(b) engine                 {out['engine_evals_per_s']:10.0f} evaluations/s")
        print(f"(c) naive DEAP loop        {out['naive_deap_evals_per_s']:10.0f} evaluations/s")
        print(f"b/a = {out['engine_over_bare']:.3f}   b/c = {out['engine_over_naive']:.1f}")
    print("seed  generations to all >= 99.99 %   seconds")
    for s, r in out["seeds"].items():
        print(f"{s:4d}  {str(r['generations']):>28}   {r['seconds']:7.2f}")
    if "median_generations" in out:
        print(f"median: {out['median_generations']} generations, {out['median_seconds']} s")


if __name__ == "__main__":
    main()
