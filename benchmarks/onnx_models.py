"""``onnx:PATH`` vs a TorchScript copy of the same RGB network: generations to fool every class.

Builds a small RGB classifier (3×32×32, 10 classes, seeded random weights: nothing to download),
saves it both as TorchScript and as ONNX with the same sidecar, and runs ``evofool run`` on each
for both encodings and a few seeds until every class is ≥ ``--stop-at``. Same network, two
runtimes: the generation counts should agree within seed-to-seed noise.

    python benchmarks/onnx_models.py [--seeds 0 1 2 3 4] [--generations 300] [--stop-at 0.9999]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from evofool.api import evolve


def rgb_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 10)).eval()
    with torch.no_grad():  # default init gives logits within ±1: no image could reach 99 %
        net[-1].weight.mul_(40.0)
    return net


def save_both(folder: Path) -> tuple[str, str]:
    net, example = rgb_net(), torch.rand(2, 3, 32, 32)
    sidecar = json.dumps({"input_shape": [3, 32, 32], "class_names": [f"c{i}" for i in range(10)],
                          "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    with torch.no_grad():
        torch.jit.trace(net, example).save(str(folder / "net.pt"))
    torch.onnx.export(net, (example,), str(folder / "net.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    for name in ("net.pt.json", "net.onnx.json"):
        (folder / name).write_text(sidecar)
    return f"torchscript:{folder / 'net.pt'}", f"onnx:{folder / 'net.onnx'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--stop-at", type=float, default=0.9999)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        specs = dict(zip(("torchscript", "onnx"), save_both(Path(tmp))))
        print(f"{'encoding':8} {'model':12} {'generations per seed':28} median  seconds")
        for encoding in ("direct", "cppn"):
            for kind, spec in specs.items():
                counts, t = [], time.perf_counter()
                for seed in args.seeds:
                    # The TorchScript copy is scored by torch itself (runtime auto would export it).
                    result = evolve(spec, encoding=encoding, seed=seed, population=args.population,
                                    generations=args.generations, stop_at=args.stop_at, progress=False,
                                    runtime="torch" if kind == "torchscript" else "onnxruntime")
                    reached = bool((result.confidences >= args.stop_at).all())
                    counts.append(result.generation if reached else f">{args.generations}")
                numeric = [c for c in counts if isinstance(c, int)]
                median = statistics.median(numeric) if len(numeric) == len(counts) else "-"
                print(f"{encoding:8} {kind:12} {str(counts):28} {median!s:6}  {time.perf_counter() - t:6.1f}")


if __name__ == "__main__":
    main()
