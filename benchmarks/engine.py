"""Engine throughput and speed-to-target, against the fastest runtime's bare forward pass.

Measures in ONE process, for each engine runtime (``--runtimes``: the evaluator scores
with torch, or with ONNX Runtime as ``--runtime auto`` does on the CPU):
  (a) bare forward images/s of the model at the run's batch size on EACH runtime: torch
      eager ``module(preprocess(x))`` and its ONNX export run by ONNX Runtime,
  (b) engine evaluations/s over a run (vary + render + one scoring pass + archive update + stats),
      (a) and (b) interleaved, one bare pass of each runtime per generation (order
      alternating), so machine drift hits all of them alike,
  (c) a naive DEAP loop: DEAP's own mutPolynomialBounded on list genomes and one batch-1
      forward pass (torch) per individual,
and prints a table per engine runtime: b, b ÷ the fastest bare forward (what is left to
gain), b ÷ the torch eager forward; then, for seeds 0-4, the generations and seconds
until every class is at >= 99.99 % on each engine runtime, interleaved seed by seed, and
torch's median time ÷ each runtime's.

    python benchmarks/engine.py [--model lenet-mnist] [--encoding direct] [--population 200]
                                [--runtimes torch onnxruntime] [--generations 200]
                                [--seeds 0 1 2 3 4] [--throughput-generations 600]
                                [--param eta=15 ...] [--selection uniform] [--recombine off]
                                [--block 1]

Photo models: ``--model efficientnet-lite0 --encoding cppn --population 100
--throughput-generations 8 --naive-generations 0 --seeds``.
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
from evofool.cli.run import parse_param
from evofool.config import RunConfig
from evofool.encodings import make_encoding
from evofool.engine import SELECTIONS, Engine
from evofool.evaluator import forward_chunk, stable_log_softmax
from evofool.job import make_recombination
from evofool.models import load_model
from evofool.scoring import build_scoring
from forward import RUNTIMES, bare_forwards, timed  # benchmarks/forward.py, beside this script

# DEAP's creator classes live at module level, made once (never inside functions).
creator.create("FitnessMaxBench", base.Fitness, weights=(1.0,))
creator.create("IndividualBench", list, fitness=creator.FitnessMaxBench)


SELECTION = RunConfig().selection  # the run's default parent choice; --selection overrides
RECOMBINE = RunConfig().recombine  # the run's default step recombination; --recombine overrides


def make_engine(model, evaluator, encoding_name, params, population, seed) -> Engine:
    enc = make_encoding(encoding_name, model.input_shape, "cpu", **params)
    return Engine(enc, evaluator, ClassArchive(model.num_classes, enc), population, np.random.default_rng(seed),
                  selection=SELECTION, recombination=make_recombination(RECOMBINE, enc))


ENGINE_PHASES = ("ask", "score", "tell")  # Engine.step's three calls; the rest is its record


def engine_and_bare_throughput(model, evaluator, encoding, params, population, generations,
                               seed=0, block=1) -> tuple[dict[str, float], float, dict[str, float]]:
    """({runtime: bare forward images/s}, engine evaluations/s, {phase: ms a generation}),
    measured interleaved.

    The phases are the engine's ``ask`` (selection + variation), ``score`` (rendering and
    the forward passes), ``tell`` (archive update, emitters) and ``rest`` (the generation's
    record): all but ``score`` is host work that the bare forward does not have.

    Engine generations (select + vary + render + one scoring pass + archive update +
    statistics) alternate with bare forward passes of the plain model on each runtime
    over a population of random images, in that runtime's fixed chunks as the evaluator
    sends them (``forward_chunk``: its fastest exact shape; preprocessing included, no
    softmax work, no checks), so all see the same machine: on a shared 2-core VM,
    measuring one after the other lets drift of ±10 % into the ratios.

    ``block``: generations (and bare passes per runtime) between two switches. A run does
    its generations back to back, and every switch costs the next part its warm state:
    measured (Intel Xeon Sapphire Rapids, 2 cores, LeNet pop 200, ONNX Runtime, 400
    generations, runs of this script alternating) the engine ran at 0.72 and 0.74 × the
    bare forward when switching every generation, 0.78 and 0.84 × in blocks of 50.
    """
    engine = make_engine(model, evaluator, encoding, params, population, seed)
    engine.step()  # warm-up generation (allocations, first-call overheads)
    cpu = torch.device("cpu")
    phases = dict.fromkeys(ENGINE_PHASES, 0.0)
    for phase in ENGINE_PHASES:  # instance attributes shadow the methods step() calls
        setattr(engine, phase, timed(phases, phase, getattr(engine, phase), cpu))
    chunks = {name: forward_chunk(model.input_shape, cpu, runtime=name) for name in RUNTIMES}
    bare_calls = bare_forwards(model, population, cpu, chunks=chunks)
    names = list(bare_calls)
    with torch.inference_mode():
        for call in bare_calls.values():
            for _ in range(3):
                call()
    bare = dict.fromkeys(names, 0.0)
    steps = 0.0
    # Torch's OpenMP workers spin for milliseconds after a parallel op and slow whatever
    # runs next on the 2 cores; an untimed settling pass before each timed one keeps one
    # runtime's leftovers out of the next one's time (and out of the engine's).
    settle = bare_calls.get("onnxruntime", bare_calls[names[-1]])
    g = 0
    while g < generations - 1:
        n = min(block, generations - 1 - g)
        with torch.inference_mode():
            for name in (names if (g // block) % 2 == 0 else names[::-1]):
                bare_calls[name]()
                t0 = time.perf_counter()
                for _ in range(n):
                    bare_calls[name]()
                bare[name] += time.perf_counter() - t0
            settle()
        t1 = time.perf_counter()
        for _ in range(n):
            engine.step()
        steps += time.perf_counter() - t1
        g += n
    n, g = (generations - 1) * population, generations - 1
    per_generation = {phase: t / g * 1e3 for phase, t in phases.items()}
    per_generation["rest"] = steps / g * 1e3 - sum(per_generation.values())
    return {name: n / t for name, t in bare.items()}, n / steps, per_generation


def time_to_target(model, evaluator, encoding, params, population, max_generations, seed,
                   target=0.9999) -> tuple[int | None, float]:
    engine = make_engine(model, evaluator, encoding, params, population, seed)
    t = time.perf_counter()
    while engine.generation < max_generations:
        engine.step()
        if np.all(engine.archive.confidences() >= target):
            return engine.generation, time.perf_counter() - t
    return None, time.perf_counter() - t


def naive_deap(model, population, generations, seed=0) -> float:
    """evaluations/s of a textbook DEAP loop: per-individual evaluate, DEAP's mutation."""
    random.seed(seed)
    n_genes = int(np.prod(model.input_shape))
    shape = model.input_shape
    toolbox = base.Toolbox()
    toolbox.register("attr", random.random)
    toolbox.register("individual", tools.initRepeat, creator.IndividualBench, toolbox.attr, n_genes)
    toolbox.register("mutate", tools.mutPolynomialBounded, eta=15.0, low=0.0, up=1.0, indpb=0.1)

    module, pre = model.module, model.preprocess

    def evaluate(ind):  # one image through the model: no chunk padding, as a textbook loop does
        x = torch.tensor(ind, dtype=torch.float32).view(1, *shape)
        with torch.inference_mode():
            return (stable_log_softmax(module(pre(x)))[0],)

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
    ap.add_argument("--block", type=int, default=1,
                    help="generations (and bare passes) between two switches of the throughput measurement; "
                         "1: switch every generation (the strictest pairing); a run does its generations "
                         "back to back, as blocks of 25-50 do")
    ap.add_argument("--naive-generations", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--param", action="append", default=[], help="encoding parameter NAME=VALUE")
    ap.add_argument("--selection", default=RunConfig().selection, choices=SELECTIONS)
    ap.add_argument("--recombine", default=RunConfig().recombine, help="auto, off or step lengths 2,4,8,16")
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                    help="engine runtimes to measure (the seeds runs use the last one)")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()
    args.block = max(1, args.block)
    params = dict(parse_param(p) for p in args.param)  # as evofool run --param reads them
    global SELECTION, RECOMBINE
    SELECTION, RECOMBINE = args.selection, args.recombine
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_model(args.model)
    evaluators = {name: build_scoring(model, device="cpu", runtime=name)[1] for name in args.runtimes}
    out: dict = {"model": args.model, "encoding": args.encoding, "population": args.population, "block": args.block,
                 "params": params, "selection": SELECTION, "recombine": RECOMBINE, "threads": torch.get_num_threads(),
                 "bare_chunks": {name: forward_chunk(model.input_shape, torch.device("cpu"), runtime=name)
                                 for name in RUNTIMES},
                 "chunks": {name: e.chunk for name, e in evaluators.items()}, "runtimes": {}}
    if not args.skip_throughput:
        for name, evaluator in evaluators.items():
            bare, b, phases = engine_and_bare_throughput(model, evaluator, args.encoding, params,
                                                         args.population, args.throughput_generations,
                                                         block=args.block)
            fastest = max(bare, key=bare.get)
            out["runtimes"][name] = {"engine_evals_per_s": b, "bare_forward_per_s": bare, "fastest_bare": fastest,
                                     "ms_per_generation": phases,
                                     "engine_over_fastest_bare": b / bare[fastest],
                                     "engine_over_torch_bare": b / bare["torch"]}
        if args.naive_generations:
            c = naive_deap(model, args.population, args.naive_generations)
            out["naive_deap_evals_per_s"] = c
            for row in out["runtimes"].values():
                row["engine_over_naive"] = row["engine_evals_per_s"] / c
    # time to target on every runtime, interleaved seed by seed (order alternating), so drift
    # of the shared machine hits each runtime alike; the generation counts should agree
    runs: dict[str, dict[int, tuple[int | None, float]]] = {name: {} for name in args.runtimes}
    for i, s in enumerate(args.seeds):
        for name in (args.runtimes if i % 2 == 0 else args.runtimes[::-1]):
            runs[name][s] = time_to_target(model, evaluators[name], args.encoding, params, args.population,
                                           args.generations, s)
    out["time_to_target"] = {}
    for name, by_seed in runs.items():
        row = {"seeds": {s: {"generations": g, "seconds": round(t, 3)} for s, (g, t) in by_seed.items()}}
        if by_seed and all(g is not None for g, _ in by_seed.values()):
            row["median_generations"] = statistics.median(g for g, _ in by_seed.values())
            row["median_seconds"] = round(statistics.median(t for _, t in by_seed.values()), 3)
        out["time_to_target"][name] = row
    if "torch" in runs and len(runs) > 1 and all("median_seconds" in r for r in out["time_to_target"].values()):
        base = out["time_to_target"]["torch"]["median_seconds"]
        for name, row in out["time_to_target"].items():
            row["torch_over_this"] = round(base / row["median_seconds"], 3)
    if args.json:
        print(json.dumps(out))
        return
    print(f"model {args.model}, encoding {args.encoding}, population {args.population} (chunks {out['chunks']}), "
          f"params {params}, selection {SELECTION}, recombine {RECOMBINE}, {out['threads']} threads, "
          f"{args.throughput_generations - 1} interleaved generations in blocks of {args.block}")
    for name, row in out["runtimes"].items():
        bare = row["bare_forward_per_s"]
        print(f"\nengine scoring with {name}")
        for runtime_name, rate in bare.items():
            print(f"(a) bare forward, {runtime_name:<12} {rate:10.1f} images/s "
                  f"({args.population} images in chunks of {out['bare_chunks'][runtime_name]})")
        print(f"(b) engine                      {row['engine_evals_per_s']:10.1f} evaluations/s")
        print(f"b ÷ fastest bare ({row['fastest_bare']}) = {row['engine_over_fastest_bare']:.3f}   "
              f"b ÷ torch eager bare = {row['engine_over_torch_bare']:.3f}"
              + (f"   b ÷ naive DEAP = {row['engine_over_naive']:.1f}" if "engine_over_naive" in row else ""))
        ms = row["ms_per_generation"]
        print("    a generation: " + ", ".join(f"{phase} {ms[phase]:.2f} ms" for phase in (*ENGINE_PHASES, "rest"))
              + f"; the fastest bare forward of {args.population} images: "
                f"{args.population / bare[row['fastest_bare']] * 1e3:.2f} ms")
    if "naive_deap_evals_per_s" in out:
        print(f"(c) naive DEAP loop (torch, batch 1) {out['naive_deap_evals_per_s']:10.1f} evaluations/s")
    for name, row in out["time_to_target"].items():
        print(f"\nseed  generations to all >= 99.99 %   seconds  (scoring with {name})")
        for s, r in row["seeds"].items():
            print(f"{s:4d}  {str(r['generations']):>28}   {r['seconds']:7.2f}")
        if "median_generations" in row:
            print(f"median: {row['median_generations']} generations, {row['median_seconds']} s"
                  + (f"   (torch's median time ÷ this = {row['torch_over_this']})" if "torch_over_this" in row else ""))

if __name__ == "__main__":
    main()
