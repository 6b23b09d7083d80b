"""Which mutation pays late in a CPPN run: children of the same champions, made each way.

Loads a run folder's newest checkpoint (read only), draws ``--children`` champions below 99 %
uniformly (with replacement, seeded; ``--band`` narrows them by confidence), and for each
operator makes one child of each, scores them with the run's model (the scorer ``evofool run``
builds) and counts how often a child beat some cell of the archive (usually its parent's), how
many cells would improve, and the summed log-probability gain (each cell's best child over its
champion). Operators: ``run`` (the run's own mutation, the parents' confidences handed over as
the engine does), ``structural`` (the run's rates with no weights-only share) and ``P/ETA``
(only weights change: cppn ``weights_only_p_weight`` P, at least one weight each, and
``weights_only_eta`` ETA).

    python benchmarks/weights_only_probe.py RUN_FOLDER [--children 800] [--seeds 1 2]
        [--ops run structural 0.1/40 0.05/40 0.02/100 0.02/200] [--band 0 0.99] [--threads 1]

The numbers behind cppn's ``weights_only_p_weight`` / ``weights_only_eta`` came from it.
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


def run_settings(run: Path) -> dict:
    """The settings the run was started with (its config.json's ``config``)."""
    return json.loads((run / "config.json").read_text())["config"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--children", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ops", nargs="+", default=["run", "structural", "0.1/40", "0.05/40", "0.02/100", "0.02/200"])
    ap.add_argument("--band", type=float, nargs=2, default=[0.0, 0.99], metavar=("LO", "HI"),
                    help="draw the champions among those at confidence in [LO, HI)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    settings = run_settings(args.run)
    params = settings["encoding_params"]
    classifier, evaluator = build_scoring(settings["model"], device="cpu", crops=settings["crops"],
                                          runtime=settings["runtime"], threads=args.threads)
    run_encoding = make_encoding("cppn", classifier.input_shape, "cpu", **params)
    archive = ClassArchive(evaluator.num_classes, run_encoding)
    _, arrays, _ = load(args.run)
    archive.load_arrays(arrays)  # takes the archive's and genomes' arrays, as Engine.load_state_dict
    fitness = archive.fitness.double().numpy()
    confidence = np.exp(fitness)
    print(f"{args.run.name}: median {100 * np.median(confidence):.2f} %, {(confidence >= 0.99).sum()} classes >= 99 %",
          flush=True)

    def operator(name: str):
        if name == "run":
            return run_encoding, True
        if name == "structural":
            return make_encoding("cppn", classifier.input_shape, "cpu", **(params | {"p_weights_only": 0.0})), False
        p_weight, eta = (float(v) for v in name.split("/"))
        fine = params | {"p_weights_only": 1.0, "weights_only_above": 0.0, "weights_only_p_weight": p_weight,
                         "weights_only_eta": eta}
        return make_encoding("cppn", classifier.input_shape, "cpu", **fine), False

    band = np.flatnonzero((confidence >= args.band[0]) & (confidence < args.band[1]))
    totals: dict[str, np.ndarray] = {}
    for seed in args.seeds:
        classes = np.random.default_rng(seed).choice(band, size=args.children, replace=True)
        parents = list(archive.genomes_of(classes))
        for name in args.ops:
            start = time.perf_counter()
            encoding, scored = operator(name)
            make = np.random.default_rng(1000 + seed)
            children = (encoding.vary_scored(parents, confidence[classes], make, 0) if scored
                        else encoding.vary(parents, make, 0))
            with torch.inference_mode():
                log_probs = evaluator.evaluate(encoding.render(children)).log_probs.double().cpu().numpy()
            gain = log_probs - fitness[None, :]
            best = np.maximum(gain.max(0), 0.0)
            row = np.array([(gain > 0).any(1).mean(), (best > 0).sum(), best.sum()])
            totals[name] = totals.get(name, 0) + row / len(args.seeds)
            print(f"seed {seed} {name:>10}: beat a cell {100 * row[0]:5.1f} %, cells {int(row[1]):4d}, "
                  f"gain {row[2]:7.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nmean over seeds {args.seeds}, {args.children} children each:")
    print("| operator | beat a cell | cells improved | summed log-prob gain |\n|---|---|---|---|")
    for name, (beat, cells, gain) in totals.items():
        print(f"| {name} | {100 * beat:.1f} % | {cells:.0f} | {gain:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
