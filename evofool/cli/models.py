"""``evofool train``, ``evofool classify`` and ``evofool models``."""

from __future__ import annotations

import json
import platform
import shlex
import time
from pathlib import Path

import click
import torch

from evofool.config import RunConfig
from evofool.crops import CROP_CHOICES
from evofool.errors import EvofoolError
from evofool.models import DEFAULT_MODEL, list_models
from evofool.runtime import RUNTIMES


@click.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Folder with MNIST-style idx(.gz) files (train-images-idx3-ubyte.gz, ...).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Weights file to write (.safetensors); a .json sidecar goes next to it.")
@click.option("--seed", default=0, show_default=True, help="Fixes initial weights and data order.")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (SGD, Nesterov momentum 0.9, warm-up then cosine decay).")
def train(data_dir: Path, out: Path, seed: int, epochs: int, batch_size: int, lr: float) -> None:
    """Train Caffe's MNIST LeNet on idx files; usable afterwards as --model lenet:OUT."""
    from evofool.data import load_idx_dataset
    from evofool.models.lenet import save_lenet
    from evofool.train import train_lenet

    train_x, train_y = load_idx_dataset(data_dir, "train")
    test_x, test_y = load_idx_dataset(data_dir, "test")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    command = shlex.join(["evofool", "train", "--data", str(data_dir), "--seed", str(seed),
                          "--epochs", str(epochs), "--batch-size", str(batch_size),
                          "--lr", str(lr), "--out", str(out)])
    threads = torch.get_num_threads()
    click.echo(f"training LeNet on {len(train_x)} images ({num_classes} classes), "
               f"seed {seed}, {epochs} epochs, {threads} CPU thread{'s' * (threads != 1)}")

    def report(stats) -> None:
        click.echo(f"epoch {stats.epoch}/{epochs}: loss {stats.train_loss:.4f}, "
                   f"test accuracy {stats.test_accuracy:.2%} ({stats.seconds:.1f} s)")

    start = time.perf_counter()
    result = train_lenet(train_x, train_y, num_classes, seed=seed, epochs=epochs,
                         batch_size=batch_size, lr=lr, test_images=test_x, test_labels=test_y,
                         progress=report)
    seconds = time.perf_counter() - start
    meta = {
        "arch": "lenet (Caffe MNIST example: conv20-pool-conv50-pool-ip500-relu-ip)",
        "class_names": [str(i) for i in range(num_classes)],
        "command": command,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": f"SGD nesterov momentum 0.9, weight decay 5e-4, peak lr {lr}, warm-up + cosine",
        "train_images": len(train_x),
        "test_images": len(test_x),
        "test_accuracy": result.test_accuracy,
        "history": [{"epoch": s.epoch, "train_loss": round(s.train_loss, 6),
                     "test_accuracy": s.test_accuracy} for s in result.history],
        "train_seconds": round(seconds, 1),
        # CPU float reductions can depend on the thread count; record it for exact replays.
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    side = save_lenet(result.model, out, meta)
    click.echo(f"final test accuracy {result.test_accuracy:.2%} on {len(test_x)} images "
               f"({seconds:.0f} s); wrote {out} and {side}")


@click.command("classify")
@click.argument("images", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_spec", default=DEFAULT_MODEL, show_default=True,
              help="Model spec (see 'evofool models').")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many classes to show per image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per image.")
@click.option("--fit", type=click.Choice(["whole", "crop"]), default="whole", show_default=True,
              help="Photo models: resize the whole picture, or resize 256 + centre crop (ImageNet eval).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=RunConfig().runtime, show_default=True,
              help="What scores the images (as evofool run --runtime).")
@click.option("--crops", type=click.Choice([str(c) for c in CROP_CHOICES]), default=str(RunConfig().crops),
              show_default=True,
              help="As evofool run --crops: 10 scores the mean softmax of 10 crops (a --crops 10 run's champions).")
@click.option("--max-batch", type=click.IntRange(min=1), default=RunConfig().max_batch, show_default=True,
              help="As evofool run --max-batch: the largest forward-pass chunk.")
def classify(images: tuple[Path, ...], model_spec: str, top: int, as_json: bool, fit: str, runtime: str,
             crops: str, max_batch: int) -> None:
    """Show a model's top classes and confidences for image files.

    A run's champions score exactly their saved confidences when classified as the run
    scored them: its model, --runtime, --crops and --max-batch (its config.json records
    them; the defaults match a run's defaults).
    """
    from evofool.imageio import load_image
    from evofool.scoring import build_scoring

    classifier, evaluator = build_scoring(model_spec, runtime=runtime, crops=int(crops), max_batch=max_batch,
                                          probe=False)
    batch = torch.stack([load_image(p, classifier.input_shape, resize=classifier.resize_inputs,
                                    model=model_spec, fit=fit) for p in images])
    probs = evaluator.evaluate(batch).probs.cpu()  # one pass for all images
    if probs.shape[0] != len(images):  # BatchEvaluator checks every chunk; this states the promise
        raise EvofoolError(f"model {model_spec} scored {probs.shape[0]} of {len(images)} images")
    conf, idx = probs.topk(min(top, classifier.num_classes), dim=1)
    for path, row_conf, row_idx in zip(images, conf.tolist(), idx.tolist()):
        ranked = [{"index": i, "name": classifier.class_names[i], "confidence": c}
                  for i, c in zip(row_idx, row_conf)]
        if as_json:
            click.echo(json.dumps({"path": str(path), "top": ranked}))
            continue
        click.echo(str(path))
        for entry in ranked:
            # Show the index too when the name does not already say it (ImageNet classes).
            label = entry["name"] if entry["name"] == str(entry["index"]) \
                else f"{entry['name']} ({entry['index']})"
            click.echo(f"  {entry['confidence']:9.4%}  {label}")


@click.command("models")
def models_cmd() -> None:
    """List the model specs --model accepts."""
    rows = list_models()
    width = max(len(spec) for spec, _ in rows)
    for spec, description in rows:
        click.echo(f"{spec:<{width}}  {description}")
    click.echo(f"\ndefault: {DEFAULT_MODEL}")


COMMANDS = [train, classify, models_cmd]
