"""The paper's retraining experiment: teach the network a "fooling" class, then fool it again.

Iteration k (k = 1..K):

1. evolve fooling images against DNN_k (DNN_1 is ``--model``) into ``OUT/iter-k/run``,
   harvesting every distinct champion image that reaches ``min_confidence`` at each
   snapshot (every ``snapshot_every`` generations, i.e. the run's checkpoints);
2. keep ``images_per_iteration`` of them, spread evenly over the run
   (``OUT/iter-k/fooling.npz``);
3. train DNN_{k+1} from scratch on the real training data plus the fooling images of
   *all* iterations so far as class n+1, named ``fooling`` (``OUT/iter-k/model.safetensors``,
   a LeNet with n+1 outputs and a sidecar naming them: ``lenet:PATH`` loads it).

A last run against DNN_{K+1} goes to ``OUT/iter-{K+1}/run``. Runs against a retrained
network use the spec ``first:n:lenet:PATH``: its cells are only the n real classes,
and each one's confidence is that class's probability under the (n+1)-class softmax,
so the mass on ``fooling`` stays out of every cell (the engine, job and config are
unchanged; ``evofool.models.first`` is the wrapper). ``OUT/retrain.json`` / ``.csv`` hold
one row per network attacked.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.outputs import SCORES

FOOLING = "fooling"


# --- settings, harvest, results ---------------------------------------------------------------
@dataclass
class RetrainSettings:
    """Parameters of ``evofool retrain`` (see the module docstring)."""

    data: Path
    model: str = "lenet-mnist"
    iterations: int = 3
    generations: int = 200
    population: int = 200
    images_per_iteration: int = 1000
    min_confidence: float = 0.99
    snapshot_every: int = 1
    epochs: int = 5
    seed: int = 0
    train_subset: int | None = None
    stop_at: float | None = None
    device: str | None = None

    def validate(self) -> "RetrainSettings":
        """Raises ``EvofoolError`` for values no experiment can use; returns self."""
        for name in ("iterations", "generations", "population", "images_per_iteration", "snapshot_every",
                     "epochs"):
            if getattr(self, name) < 1:
                raise EvofoolError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.train_subset is not None and self.train_subset < 1:
            raise EvofoolError(f"train-subset must be at least 1 (got {self.train_subset})")
        if not 0.0 < self.min_confidence <= 1.0:
            raise EvofoolError(f"min-confidence must lie in (0, 1] (got {self.min_confidence})")
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise EvofoolError(f"stop-at must lie in (0, 1] (got {self.stop_at})")
        return self


@dataclass
class Harvest:
    """A checkpoint hook collecting each distinct champion image at or above ``min_confidence``.

    Every call (``hook(job)``, after each checkpoint of the job) adds the champions of the
    job's archive not seen before, in class order.

    Attributes:
        min_confidence: A champion counts as a fooling image from this confidence on.
        image_shape: ``C×H×W`` of the images (what ``take`` returns when none were found).
    """

    min_confidence: float
    image_shape: tuple[int, int, int]
    images: list[np.ndarray] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    generations: list[int] = field(default_factory=list)
    _seen: set = field(default_factory=set)

    def __call__(self, job) -> None:
        archive = job.engine.archive
        conf = archive.confidences()
        images = archive.images.cpu().numpy()
        found = archive.generation.cpu().numpy()
        for k in np.flatnonzero(conf >= self.min_confidence):
            key = images[k].tobytes()
            if key in self._seen:
                continue
            self._seen.add(key)
            self.images.append(images[k].copy())
            self.classes.append(int(k))
            self.confidences.append(float(conf[k]))
            self.generations.append(int(found[k]))

    def take(self, limit: int) -> dict[str, np.ndarray]:
        """At most ``limit`` of the images, evenly spread over the harvest order (arrays)."""
        n = len(self.images)
        idx = np.unique(np.linspace(0, n - 1, num=min(limit, n)).round().astype(np.int64)) if n else \
            np.empty(0, dtype=np.int64)
        images = np.stack([self.images[i] for i in idx]) if n else np.empty((0, *self.image_shape), np.uint8)
        return {"images": images, "classes": np.asarray(self.classes, np.int64)[idx],
                "confidences": np.asarray(self.confidences, np.float64)[idx],
                "generations": np.asarray(self.generations, np.int64)[idx]}


@dataclass
class IterationResult:
    """One network attacked: how well it classifies, how badly it is fooled."""

    iteration: int
    dnn: str
    model: str
    classes: int
    fooling_train_images: int
    test_accuracy: float
    test_as_fooling: float
    fooling_recall: float | None
    generations: int
    median_confidence: float
    max_confidence: float
    n99: int
    n9999: int
    harvested: int
    kept: int
    run: str
    run_seconds: float
    train_seconds: float | None = None


TABLE_KEYS = ("iteration", "dnn", "classes", "fooling_train_images", "test_accuracy", "test_as_fooling",
              "fooling_recall", "generations", "median_confidence", "max_confidence", "n99", "n9999",
              "harvested", "kept")


def table_lines(rows: list[IterationResult], real: int) -> list[str]:
    """The printed table, one line per network."""
    head = ["DNN", "classes", "fooling imgs", f"test acc ({real} real)", "test→fooling", "fooling recall (train)",
            "gens", "median conf", "max conf", "≥99%", "≥99.99%", "harvested"]
    body = []
    for r in rows:
        recall = "-" if r.fooling_recall is None else f"{r.fooling_recall:.2%}"
        body.append([r.dnn, str(r.classes), str(r.fooling_train_images), f"{r.test_accuracy:.2%}",
                     f"{r.test_as_fooling:.2%}", recall, str(r.generations), f"{r.median_confidence:.6f}",
                     f"{r.max_confidence:.6f}", f"{r.n99}/{real}", f"{r.n9999}/{real}",
                     f"{r.harvested} (kept {r.kept})" if r.kept else str(r.harvested)])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in [head, *body]]


def write_table(out: Path, rows: list[IterationResult], settings: RetrainSettings) -> None:
    """``OUT/retrain.json`` (settings + rows) and ``OUT/retrain.csv`` (the table's columns)."""
    from evofool.runfolder import write_json_atomic

    doc = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
           "iterations": [asdict(r) for r in rows]}
    write_json_atomic(out / "retrain.json", doc)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_KEYS)
    for r in rows:
        writer.writerow([("" if getattr(r, k) is None else getattr(r, k)) for k in TABLE_KEYS])
    safefs.write_text_atomic(out / "retrain.csv", buf.getvalue())


# --- the experiment ---------------------------------------------------------------------------
def _predictions(classifier: Classifier, images: torch.Tensor, device) -> torch.Tensor:
    """Top-1 class of uint8 ``N×H×W`` (or ``N×1×H×W``) images, one batched pass per chunk."""
    from evofool.evaluator import BatchEvaluator

    x = images.unsqueeze(1) if images.dim() == 3 else images
    return BatchEvaluator(classifier, device=device, max_batch=2000).log_probs(x).argmax(dim=1).cpu()


def _load_data(settings: RetrainSettings, n: int):
    from evofool.data import load_idx_dataset

    train_x, train_y = load_idx_dataset(settings.data, "train")
    test_x, test_y = load_idx_dataset(settings.data, "test")
    if tuple(train_x.shape[1:]) != (28, 28):
        raise EvofoolError(f"{settings.data}: retrain trains LeNet on 28×28 images, "
                           f"got {tuple(train_x.shape[1:])}")
    top = int(max(train_y.max(), test_y.max()))
    if top >= n:
        raise EvofoolError(f"{settings.data} has labels up to {top}, but {settings.model} has only {n} classes")
    if settings.train_subset is not None and settings.train_subset < len(train_x):
        keep = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(settings.seed))
        keep = keep[:settings.train_subset].sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    return train_x, train_y, test_x, test_y


def run_retrain(settings: RetrainSettings, out: str | Path, progress: bool = False,
                say: Callable[[str], None] = print) -> list[IterationResult]:
    """Runs the whole experiment into ``out`` (which must be new or empty).

    Args:
        settings: What to run.
        out: The experiment folder.
        progress: Show each run's progress bar.
        say: Where one-line progress messages go.

    Returns:
        One result per network attacked (K + 1 of them).

    Raises:
        EvofoolError: a bad setting, dataset or model, or a non-empty ``out``.
    """
    from evofool.config import RunConfig
    from evofool.job import Job
    from evofool.models import load_model
    from evofool.models.lenet import save_lenet
    from evofool.runfolder import write_json_atomic
    from evofool.train import train_lenet

    settings.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvofoolError(f"{out} exists and is not an empty folder; choose another --out")
    base = load_model(settings.model)
    if base.outputs == SCORES:
        raise EvofoolError(f"{settings.model} returns raw unit scores; retrain needs a classifier")
    if tuple(base.input_shape) != (1, 28, 28):
        raise EvofoolError(f"retrain needs a 1×28×28 model (it retrains LeNet); {settings.model} takes "
                           f"{tuple(base.input_shape)}")
    n = base.num_classes
    names = list(base.class_names) + [FOOLING]
    train_x, train_y, test_x, test_y = _load_data(settings, n)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "retrain.json", {"settings": {k: (str(v) if isinstance(v, Path) else v)
                                                          for k, v in asdict(settings).items()},
                                             "iterations": []})

    fooling = np.empty((0, 1, 28, 28), dtype=np.uint8)  # all kept fooling images so far
    rows: list[IterationResult] = []
    classifier, spec, recall, train_seconds = base, settings.model, None, None
    for k in range(1, settings.iterations + 2):
        folder = out / f"iter-{k}"
        pred = _predictions(classifier, test_x, settings.device)
        test_acc = float((pred == test_y).double().mean())
        as_fooling = float((pred == n).double().mean())
        label = settings.model if k == 1 else f"iter-{k - 1}/model.safetensors, {n} of {n + 1} classes as cells"
        say(f"DNN{k} ({label}): test accuracy {test_acc:.2%} on {len(test_y)} real test images; evolving against it")

        harvesting = k <= settings.iterations
        harvest = Harvest(settings.min_confidence, tuple(base.input_shape))
        run_spec = spec if k == 1 else f"first:{n}:{spec}"
        config = RunConfig(model=run_spec, generations=settings.generations, population=settings.population,
                           seed=settings.seed + k - 1, device=settings.device, stop_at=settings.stop_at,
                           checkpoint_every=settings.snapshot_every if harvesting else 25)
        start = time.perf_counter()
        job = Job.start(config, folder / "run", progress=progress, hooks=[harvest] if harvesting else [])
        code = job.run()
        if code != 0:
            raise EvofoolError(f"the run in {folder / 'run'} was interrupted (exit {code})")
        run_seconds = time.perf_counter() - start
        summary = job.summary()
        conf = job.engine.archive.confidences()
        kept = harvest.take(settings.images_per_iteration) if harvesting else None
        row = IterationResult(
            iteration=k, dnn=f"DNN{k}", model=run_spec, classes=n if k == 1 else n + 1,
            fooling_train_images=len(fooling), test_accuracy=test_acc, test_as_fooling=as_fooling,
            fooling_recall=recall, generations=int(summary["generation"]),
            median_confidence=float(np.median(conf)), max_confidence=float(conf.max()),
            n99=int((conf >= 0.99).sum()), n9999=int((conf >= 0.9999).sum()),
            harvested=len(harvest.images), kept=0 if kept is None else len(kept["images"]),
            run=str(folder / "run"), run_seconds=round(run_seconds, 1), train_seconds=train_seconds)
        rows.append(row)
        write_table(out, rows, settings)
        say(f"DNN{k}: {row.n9999}/{n} classes ≥ 99.99 %, median {row.median_confidence:.6f} after "
            f"{row.generations} generations ({run_seconds:.0f} s)"
            + (f"; harvested {row.harvested} fooling images ≥ {settings.min_confidence:.2%}, kept {row.kept}"
               if harvesting else ""))
        if not harvesting:
            break

        np.savez_compressed(folder / "fooling.npz", **kept)
        fooling = np.concatenate([fooling, kept["images"]])
        if len(fooling) == 0:
            raise EvofoolError(f"no champion of the run against DNN{k} reached {settings.min_confidence:.2%}: "
                               "nothing to train the fooling class on (more --generations, or lower "
                               "--min-confidence)")
        x = torch.cat([train_x, torch.from_numpy(fooling[:, 0])])
        y = torch.cat([train_y, torch.full((len(fooling),), n, dtype=torch.int64)])
        say(f"training DNN{k + 1}: {len(train_x)} real images + {len(fooling)} fooling images "
            f"(class {n}, '{FOOLING}'), {settings.epochs} epoch{'s' * (settings.epochs != 1)}")
        t0 = time.perf_counter()
        result = train_lenet(x, y, n + 1, seed=settings.seed, epochs=settings.epochs)
        train_seconds = round(time.perf_counter() - t0, 1)
        with torch.inference_mode():
            fool_pred = result.model(torch.from_numpy(fooling).float().div(255)).argmax(1)
        recall = float((fool_pred == n).double().mean())
        weights = folder / "model.safetensors"
        save_lenet(result.model, weights, {
            "arch": "lenet (Caffe MNIST example: conv20-pool-conv50-pool-ip500-relu-ip)",
            "class_names": names, "experiment": "evofool retrain", "iteration": k,
            "trained_on": f"{settings.data} train split"
                          + (f" (subset of {len(train_x)})" if settings.train_subset else "")
                          + f" + {len(fooling)} fooling images of iterations 1..{k}",
            "attacked_before": run_spec, "seed": settings.seed, "epochs": settings.epochs,
            "train_images": len(x), "fooling_images": len(fooling), "train_seconds": train_seconds,
            "history": [{"epoch": s.epoch, "train_loss": round(s.train_loss, 6)} for s in result.history],
            "torch": torch.__version__})
        spec = f"lenet:{weights.resolve()}"
        classifier = load_model(spec)
    return rows


__all__ = ["FOOLING", "Harvest", "IterationResult", "RetrainSettings", "run_retrain", "table_lines",
           "write_table"]
