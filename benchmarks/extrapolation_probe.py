"""Does a weight step that won go on winning? The measurement behind ``--extrapolate``.

Loads a CPPN run folder's newest checkpoint (read only), draws ``--children`` champions whose
confidence lies in ``--band`` (uniformly, with replacement, seeded) and gives each one
weights-only child (the run's encoding with ``p_weights_only=1``). For the children that beat
their parent on the parent's class (same graph: only weights differ), it scores the step
continued, ``child + s * (child - parent)`` for each ``--lengths`` s, and for comparison two
fresh weights-only children of the child. It prints how often each beats the child and the
mean log-probability gain over it per evaluation, beside the mean gain of a weights-only
child of a random champion of the band (what an evaluation spent on mutation buys there).

    python benchmarks/extrapolation_probe.py RUN_FOLDER [--children 800] [--seed 1]
        [--lengths 0.5 1 2 4] [--band 0.3 0.99] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evofool.archive import ClassArchive
from evofool.checkpoint import load
from evofool.encodings import make_encoding
from evofool.scoring import build_scoring


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--children", type=int, default=800)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lengths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--band", type=float, nargs=2, default=[0.3, 0.99], metavar=("LO", "HI"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    settings = json.loads((args.run / "config.json").read_text())["config"]
    params = settings["encoding_params"]
    classifier, evaluator = build_scoring(settings["model"], device="cpu", crops=settings["crops"],
                                          runtime=settings["runtime"], threads=args.threads)
    encoding = make_encoding("cppn", classifier.input_shape, "cpu", **params)
    weights_only = make_encoding("cppn", classifier.input_shape, "cpu",
                                 **(params | {"p_weights_only": 1.0, "weights_only_above": 0.0}))
    archive = ClassArchive(evaluator.num_classes, encoding)
    archive.load_arrays(load(args.run)[1])
    fitness = archive.fitness.double().numpy()
    band = np.flatnonzero((np.exp(fitness) >= args.band[0]) & (np.exp(fitness) < args.band[1]))
    rng = np.random.default_rng(args.seed)
    classes = rng.choice(band, size=args.children, replace=True)
    parents = list(archive.genomes_of(classes))

    def own_class(genomes, cls) -> np.ndarray:
        with torch.inference_mode():
            log_probs = evaluator.evaluate(encoding.render(genomes)).log_probs.double().cpu().numpy()
        return log_probs[np.arange(len(genomes)), cls]

    start = time.perf_counter()
    children = weights_only.vary(parents, rng, 0)
    own = own_class(children, classes)
    won = [i for i in np.flatnonzero(own > fitness[classes]) if encoding.same_graph(children[i], parents[i])]
    print(f"{args.run.name}: {len(band)} champions in [{args.band[0]}, {args.band[1]}); {args.children} "
          f"weights-only children, {len(won)} beat their parent ({100 * len(won) / args.children:.1f} %); mean "
          f"gain per child {np.mean(np.maximum(own - fitness[classes], 0)):.5f}", flush=True)
    if not won:
        return
    winners = [children[i] for i in won]
    best = own[won]
    print("| candidate | beats the child | mean gain over it per evaluation |\n|---|---|---|")
    for s in args.lengths:
        steps = [c.link_weight.astype(np.float64) + s * (c.link_weight.astype(np.float64)
                                                          - parents[i].link_weight.astype(np.float64))
                 for c, i in zip(winners, won)]
        scores = own_class(weights_only.with_weights(winners, np.concatenate(steps)), classes[won])
        print(f"| continued x{s:g} | {100 * np.mean(scores > best):.1f} % | {np.mean(np.maximum(scores - best, 0)):.5f} |")
    for draw in range(2):
        scores = own_class(weights_only.vary(winners, rng, 0), classes[won])
        print(f"| fresh weights-only child (draw {draw}) | {100 * np.mean(scores > best):.1f} % | "
              f"{np.mean(np.maximum(scores - best, 0)):.5f} |")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
