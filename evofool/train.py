"""Seeded, reproducible LeNet training (the shipped ``lenet-mnist`` weights come from here).

``train_lenet`` takes plain tensors, not a dataset folder, so experiments can add
data (e.g. an extra "fooling" class of evolved images) before training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from evofool.errors import EvofoolError
from evofool.models.lenet import INPUT_SHAPE, LeNet


@dataclass
class EpochStats:
    """What one epoch did: mean training loss, accuracy on the test set (if given), seconds."""

    epoch: int
    train_loss: float
    test_accuracy: float | None
    seconds: float


@dataclass
class TrainResult:
    """The trained network (eval mode, CPU) and its per-epoch history."""

    model: LeNet
    history: list[EpochStats] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float | None:
        return self.history[-1].test_accuracy if self.history else None


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``N×28×28`` or ``N×1×28×28`` (or float in [0, 1]) → float ``N×1×28×28`` in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if tuple(images.shape[1:]) != INPUT_SHAPE:
        raise EvofoolError(f"LeNet trains on 28×28 greyscale images, got shape {tuple(images.shape[1:])}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (uint8 or [0, 1] float)."""
    was_training = model.training
    model.eval()
    x = _as_batch(images)
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = model(x[start:start + batch_size]).argmax(1)
        correct += int((pred == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def train_lenet(train_images: torch.Tensor, train_labels: torch.Tensor, num_classes: int,
                seed: int = 0, epochs: int = 5, batch_size: int = 128, lr: float = 0.05,
                momentum: float = 0.9, weight_decay: float = 5e-4,
                test_images: torch.Tensor | None = None, test_labels: torch.Tensor | None = None,
                progress: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Trains Caffe's LeNet from scratch with SGD + momentum and a warm-up/cosine schedule.

    Reproducible: the initial weights come from ``torch.manual_seed(seed)`` (inside a
    forked RNG, so the caller's global RNG is untouched) and each epoch's data order
    from a generator seeded with ``seed``. Runs on the CPU.

    Args:
        train_images: uint8 ``N×28×28`` (or ``N×1×28×28``; float in [0, 1] also accepted).
        train_labels: int ``N`` class indices in ``[0, num_classes)``.
        num_classes: Output classes (10 for MNIST; more when extra classes are added).
        seed: Fixes initial weights and data order.
        epochs: Passes over the training data.
        batch_size: Images per SGD step.
        lr: Peak learning rate.
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 penalty (Caffe's example uses 5e-4).
        test_images, test_labels: If given, test accuracy is measured after each epoch.
        progress: Called with each epoch's stats (e.g. to print them).

    Returns:
        The trained model (eval mode) and per-epoch statistics.
    """
    x = _as_batch(train_images)
    y = train_labels.to(torch.int64)
    if len(x) != len(y):
        raise EvofoolError(f"{len(x)} training images but {len(y)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise EvofoolError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    if epochs < 1:
        raise EvofoolError("epochs must be >= 1")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet(num_classes)
    order_gen = torch.Generator().manual_seed(seed)

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True,
                          weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    warmup = min(steps_per_epoch // 2, total // 10)

    def schedule(step: int) -> float:
        # Short linear warm-up (a high rate on fresh weights diverges), then cosine to 0.
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    result = TrainResult(model=model)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=order_gen)
        loss_sum = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
        acc = None
        if test_images is not None and test_labels is not None:
            acc = accuracy(model, test_images, test_labels)
        stats = EpochStats(epoch, loss_sum / max(len(x), 1), acc, time.perf_counter() - start)
        result.history.append(stats)
        if progress is not None:
            progress(stats)
    model.eval()
    return result
