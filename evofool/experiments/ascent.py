"""Fooling images by gradient ascent, all classes at once (``evofool ascent``).

One image per class is optimised, all in one ``B×C×H×W`` tensor (one forward and one
backward pass per step for every class). Each image ``x_i`` climbs its class's
log-probability with an L2 penalty::

    J_i(x) = log p(k_i | x) - (l2 / 2) · ‖x‖²
    g_i    = ∇ J_i
    lr_i   = min(max_lr, progress / ‖g_i‖²)        # the original's "progress" step policy
    x_i    ← clamp(x_i + lr_i · g_i, 0, 1)          # (+ a Gaussian blur every K steps)

``progress / ‖g‖²`` is the step whose first-order gain in ``J`` is ``progress``: big
steps where the objective is flat, small ones where it is steep. After every step the
images are quantised to 8 bits and re-scored exactly as they are saved; each class
keeps its best quantised image so far (its champion), and the run stops once every
champion reaches the target confidence.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from evofool.config import RunConfig
from evofool.engine import THRESHOLDS
from evofool import safefs
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.experiments import class_log_probs, quantise
from evofool.models.base import Classifier
from evofool.models.defences import MAX_BLUR_SIGMA, gaussian_blur
from evofool.models.normalize import Normalize
from evofool.models.onnx import require_gradients
from evofool.runfolder import RunFolder

STARTS = ("noise", "mean")


@dataclass
class AscentSettings:
    """What an ascent run does (stored as the run's ``encoding_params``).

    Attributes:
        classes: Class indices to make images for (one image each).
        start: ``noise`` (uniform [0, 1] pixels from the seeded generator) or ``mean``
            (the model's per-channel input mean where its preprocessing states one,
            else mid-grey 0.5).
        steps: Most steps to take.
        target: Stop once every champion reaches this confidence.
        l2: Weight of the L2 penalty ``(l2/2)·‖x‖²`` (pulls pixels towards 0).
        blur_every: Blur the images every this many steps (0: never).
        blur_sigma: Std of that blur, in pixels.
        max_lr: Largest step size.
        progress: First-order gain in ``J`` each step aims for.
        seed: Seed of the generator that draws the starting noise.
    """

    classes: list[int]
    start: str = "noise"
    steps: int = 500
    target: float = 0.9999
    l2: float = 1e-4
    blur_every: int = 0
    blur_sigma: float = 0.5
    max_lr: float = 1000.0
    progress: float = 1.0
    seed: int = 0

    def validate(self, num_classes: int) -> "AscentSettings":
        """Raises ``EvofoolError`` for values no run can use; returns self."""
        if not self.classes:
            raise EvofoolError("no classes to make images for")
        if any(not 0 <= k < num_classes for k in self.classes):
            raise EvofoolError(f"classes must lie in 0..{num_classes - 1}")
        if self.start not in STARTS:
            raise EvofoolError(f"--start must be one of {', '.join(STARTS)} (got {self.start!r})")
        if self.steps < 1:
            raise EvofoolError(f"--steps must be at least 1 (got {self.steps})")
        if not 0.0 < self.target <= 1.0:
            raise EvofoolError(f"--target must lie in (0, 1] (got {self.target})")
        if not self.l2 >= 0:
            raise EvofoolError(f"--l2 must be 0 or more (got {self.l2})")
        if not 0 <= self.blur_sigma <= MAX_BLUR_SIGMA:  # also refuses nan and inf
            raise EvofoolError(f"--blur-sigma must lie in 0..{MAX_BLUR_SIGMA:g} pixels (got {self.blur_sigma})")
        for name in ("max_lr", "progress"):
            if not getattr(self, name) > 0:
                raise EvofoolError(f"--{name.replace('_', '-')} must be positive (got {getattr(self, name)})")
        if self.blur_every < 0:
            raise EvofoolError(f"--blur-every must be 0 or more (got {self.blur_every})")
        return self


@dataclass
class Champions:
    """Each optimised class's best quantised image so far.

    Attributes:
        log_probs: ``B`` float64 log-probabilities of the images' own classes.
        images: ``B×C×H×W`` uint8 images, exactly as saved.
        steps: Step each champion was found at (-1: none yet).
    """

    log_probs: torch.Tensor
    images: torch.Tensor
    steps: torch.Tensor

    def confidences(self) -> np.ndarray:
        return torch.exp(self.log_probs).cpu().numpy()


@dataclass
class AscentResult:
    """Where a finished ascent stands."""

    champions: Champions
    steps: int
    evaluations: int
    seconds: float
    records: list[dict] = field(default_factory=list)


def start_images(classifier: Classifier, settings: AscentSettings, device: torch.device) -> torch.Tensor:
    """The ``B×C×H×W`` float32 starting images (seeded; drawn on the CPU so every device agrees)."""
    shape = (len(settings.classes), *classifier.input_shape)
    if settings.start == "noise":
        gen = torch.Generator(device="cpu").manual_seed(settings.seed)
        return torch.rand(shape, generator=gen).to(device)
    mean = torch.full((classifier.channels,), 0.5)
    pre = classifier.preprocess
    if isinstance(pre, Normalize) and pre.scale == 1.0 and pre.mean.numel() == classifier.channels:
        mean = pre.mean.detach().flatten().cpu().clamp(0, 1)
    return mean.view(1, -1, 1, 1).expand(shape).contiguous().to(device)


def statistics(confidences: np.ndarray) -> dict:
    """The champion statistics of an ``evofool run`` log record."""
    return {"min": float(np.min(confidences)), "median": float(np.median(confidences)),
            "max": float(np.max(confidences)),
            **{name: int(np.sum(confidences >= level)) for name, level in THRESHOLDS.items()}}


def ascend(classifier: Classifier, settings: AscentSettings,
           device: torch.device | str = "cpu") -> Iterator[tuple[dict, Champions]]:
    """Runs the ascent, yielding ``(record, champions)`` after every step.

    Stops after ``settings.steps`` steps or once every champion reaches ``settings.target``.
    The record has the keys of an ``evofool run`` log record (``generation`` = step).
    """
    require_gradients(classifier, "ascent")
    device = torch.device(device)
    evaluator = BatchEvaluator(classifier, device=device)
    k = torch.tensor(settings.classes, device=device).view(-1, 1)
    b = k.shape[0]
    x = start_images(classifier, settings, device)
    champs = Champions(log_probs=torch.full((b,), -math.inf, dtype=torch.float64, device=device),
                       images=torch.zeros((b, *classifier.input_shape), dtype=torch.uint8, device=device),
                       steps=torch.full((b,), -1, dtype=torch.int64, device=device))
    evaluations = 0
    for step in range(1, settings.steps + 1):
        t0 = time.perf_counter()
        x.requires_grad_(True)
        objective = (class_log_probs(classifier, x).gather(1, k).squeeze(1)
                     - 0.5 * settings.l2 * x.flatten(1).pow(2).sum(1, dtype=torch.float64))
        # Images are independent (eval mode), so the gradient of the sum is each image's own.
        (grad,) = torch.autograd.grad(objective.sum(), x)
        with torch.no_grad():
            norm2 = grad.flatten(1).to(torch.float64).pow(2).sum(1)
            lr = torch.clamp(settings.progress / norm2.clamp_min(1e-300), max=settings.max_lr)
            x = (x + lr.to(x.dtype).view(-1, 1, 1, 1) * grad).clamp_(0.0, 1.0)
            if settings.blur_every and step % settings.blur_every == 0:
                x = gaussian_blur(x, settings.blur_sigma).clamp_(0.0, 1.0)
            # Fitness is always that of the 8-bit image as saved, never of the float one.
            images = quantise(x)
            scores = evaluator.log_probs(images).gather(1, k).squeeze(1)
            better = scores > champs.log_probs
            champs.log_probs = torch.where(better, scores, champs.log_probs)
            champs.images[better] = images[better]
            champs.steps[better] = step
        evaluations += b
        seconds = time.perf_counter() - t0
        conf = champs.confidences()
        record = {"generation": step, "evaluations": evaluations, "improved": int(better.sum()),
                  **statistics(conf), "evals_per_s": round(b / max(seconds, 1e-9), 1),
                  "seconds": round(seconds, 6)}
        yield record, champs
        if bool(np.all(conf >= settings.target)):
            return


def run_config(classifier: Classifier, settings: AscentSettings, device: str | None) -> RunConfig:
    """The ``RunConfig`` recorded in an ascent run folder (``encoding = "ascent"``)."""
    params = {key: value for key, value in asdict(settings).items() if key not in ("steps", "target", "seed")}
    return RunConfig(model=classifier.spec, encoding="ascent", encoding_params=params,
                     population=len(settings.classes), generations=settings.steps, seed=settings.seed,
                     device=device, checkpoint_every=0, stop_at=settings.target).validate()


def run_ascent(classifier: Classifier, settings: AscentSettings, out: str | Path | None,
               device: torch.device | str = "cpu", log_every: int = 1,
               on_record: Callable[[dict], None] | None = None) -> tuple[RunFolder, AscentResult]:
    """Runs an ascent and writes it as an ``evofool run``-style run folder.

    Args:
        classifier: The model to fool.
        settings: The ascent's settings (validated here).
        out: Run folder to create; ``None``: ``runs/<model>-ascent-seed<S>``.
        device: Where to run.
        log_every: Write every this many steps to ``log.jsonl`` (the last step always).
        on_record: Called with every step's record (progress display).

    Returns:
        The run folder and the result.

    Raises:
        EvofoolError: bad settings, ``out`` is not usable, or a black-box model (``onnx:``).
    """
    require_gradients(classifier, "ascent")  # before the run folder is made
    settings.validate(classifier.num_classes)
    if log_every < 1:
        raise EvofoolError(f"--log-every must be at least 1 (got {log_every})")
    device = torch.device(device)
    config = run_config(classifier, settings, str(device))
    # A model that answers NaN, complex numbers or fits only batch 1 is one line before the
    # run folder exists (one chunk of noise), not a folder left with a config and no result.
    BatchEvaluator(classifier, device=device).probe()
    folder = RunFolder.create(out if out is not None else RunFolder.default_path(config), config,
                              classifier.class_names)
    start = time.perf_counter()
    records: list[dict] = []
    last: dict | None = None
    champs: Champions | None = None
    pending = 0.0  # seconds of steps since the last written record
    with folder.open_log() as log:  # appends bytes, never through a link
        for record, champs in ascend(classifier, settings, device):
            pending += record["seconds"]
            records.append(record)
            last = record
            if on_record is not None:
                on_record(record)
            if record["generation"] % log_every == 0:
                _append(log, _window(record, pending, len(settings.classes) * log_every))
                pending = 0.0
        if last is not None and last["generation"] % log_every:
            steps_left = last["generation"] % log_every
            _append(log, _window(last, pending, len(settings.classes) * steps_left))
    assert champs is not None and last is not None  # steps >= 1
    result = AscentResult(champions=champs, steps=last["generation"], evaluations=last["evaluations"],
                          seconds=time.perf_counter() - start, records=records)
    write_results(folder, classifier, settings, result)
    return folder, result


def _append(log, record: dict) -> None:
    """One JSON line appended to the run's log (``RunFolder.open_log``: bytes, unbuffered)."""
    safefs.write_all(log.fileno(), (json.dumps(record) + "\n").encode())


def _window(record: dict, seconds: float, evaluations: int) -> dict:
    """A record whose timing covers all the steps since the previous written record."""
    return {**record, "evals_per_s": round(evaluations / max(seconds, 1e-9), 1), "seconds": round(seconds, 6)}


def write_results(folder: RunFolder, classifier: Classifier, settings: AscentSettings,
                  result: AscentResult) -> None:
    """Writes ``champions/``, ``champions.json`` and ``summary.json`` as ``evofool run`` does."""
    num = classifier.num_classes
    idx = np.asarray(settings.classes)
    # Classes not optimised stay empty (log-prob -inf): write_champions skips them.
    log_probs = np.full(num, -np.inf)
    log_probs[idx] = result.champions.log_probs.cpu().numpy()
    images = np.zeros((num, *classifier.input_shape), dtype=np.uint8)
    images[idx] = result.champions.images.cpu().numpy()
    steps = np.full(num, -1, dtype=np.int64)
    steps[idx] = result.champions.steps.cpu().numpy()
    folder.write_champions(images, np.exp(log_probs), log_probs, steps, classifier.class_names)
    folder.write_summary(summary(result, settings, classifier.class_names))


def summary(result: AscentResult, settings: AscentSettings, class_names: list[str]) -> dict:
    """``summary.json``: the keys of an ``evofool run`` summary, plus the ascent's own."""
    conf = result.champions.confidences()
    b = len(settings.classes)
    reached = {}
    for record in result.records:
        for key in THRESHOLDS:
            if key not in reached and record[key] == b:
                reached[key] = record["generation"]
    below = [class_names[k] for k, c in zip(settings.classes, conf) if c < settings.target]
    return {"generation": result.steps, "evaluations": result.evaluations, "classes": b,
            "median_confidence": float(np.median(conf)),
            **{key: int(np.sum(conf >= level)) for key, level in THRESHOLDS.items()},
            **{f"all_{key[1:]}_at": reached.get(key) for key in THRESHOLDS},
            "method": "ascent", "target": settings.target, "reached_target": not below,
            "below_target": below, "seconds": round(result.seconds, 3)}
