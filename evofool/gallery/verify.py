"""``verify``: re-scores every exported PNG with the run's model and compares with the archive."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from evofool import safefs
from evofool.errors import EvofoolError
from evofool.gallery.manifest import VALUE_FIELDS, fitness_kind_of, read_manifest
from evofool.models.outputs import SCORE

TOLERANCE = 1e-3


@dataclass(frozen=True)
class Mismatch:
    """An exported image that does not give its archived confidence (or a unit's activation).

    Attributes:
        file: Path relative to the gallery.
        index: Class index.
        name: Class name.
        archived: Confidence (activation) in the archive.
        rescored: What the model gives the file (``None``: it could not be scored).
        reason: Why it could not be scored, if so.
    """

    file: str
    index: int
    name: str
    archived: float
    rescored: float | None
    reason: str = ""

    def __str__(self) -> str:
        if self.rescored is None:
            return f"{self.file}: class {self.index} ({self.name}): {self.reason}"
        return (f"{self.file}: class {self.index} ({self.name}) scores {self.rescored:.6f}, "
                f"archived {self.archived:.6f} (differs by {abs(self.rescored - self.archived):.2e})")


@dataclass
class VerifyReport:
    """Result of ``verify``: how many images were scored and which differ."""

    checked: int
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _read_image(gallery: Path, rel: str) -> bytes:
    """An exported file's bytes: inside the gallery, a regular file, bounded (the manifest may lie).

    Raises:
        ValueError: a path out of the gallery, a link, a FIFO, a missing or oversized file.
    """
    try:
        path = safefs.inside(gallery, rel, what="image")
        return safefs.read_bounded(path, safefs.PNG_LIMIT, gallery)
    except EvofoolError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:
        raise ValueError(f"cannot read the image ({exc.__class__.__name__})") from None


def _load_pixels(gallery: Path, rel: str, shape: tuple[int, int, int], factor: int) -> np.ndarray:
    """A PNG as a C×H×W uint8 array of the model's shape (an enlargement reduced by ``factor``).

    Raises:
        ValueError: unreadable file or a size that does not fit.
    """
    c, h, w = shape
    data = _read_image(gallery, rel)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if c == 1 else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read the image ({exc.__class__.__name__})") from None
    if arr.shape[:2] != (h * factor, w * factor):
        raise ValueError(f"is {arr.shape[1]}×{arr.shape[0]} px, expected {w * factor}×{h * factor}")
    arr = arr[::factor, ::factor]
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def verify(gallery: str | Path, model: str | None = None, device: str | None = None,
           tolerance: float = TOLERANCE) -> VerifyReport:
    """Scores every exported PNG (native and enlarged) in one batched pass.

    Args:
        gallery: The gallery folder (holds ``manifest.json``).
        model: Model spec; default: the run's.
        device: Where to score; default: CUDA if available, else CPU.
        tolerance: Largest allowed ``|rescored - archived|`` (confidences, or a unit run's
            activations).

    Raises:
        EvofoolError: no or a damaged manifest, or a model that cannot be loaded.
    """
    from evofool.scoring import build_scoring, recorded_runtime

    gallery = Path(gallery)
    manifest = read_manifest(gallery)
    kind = fitness_kind_of(manifest)
    value = VALUE_FIELDS[kind][0]  # confidence, or activation
    run = dict(manifest["run"])
    if model is not None:
        run["model"] = model
    # The run's own scoring stack (crops, runtime, fixed chunk): the bits the run got.
    classifier, evaluator = build_scoring(run.get("model"), device=device, crops=int(run.get("crops") or 1),
                                          precision=run.get("precision") or "auto",
                                          runtime=recorded_runtime(run), probe=False)
    shape = tuple(classifier.input_shape)
    report = VerifyReport(checked=0)
    pixels, targets = [], []
    for entry in manifest["classes"]:
        files = [(entry["image"], 1)] + ([(entry["enlarged"], int(entry["scale"]))] if entry.get("enlarged") else [])
        for rel, factor in files:
            report.checked += 1
            if not 0 <= int(entry["class"]) < classifier.num_classes:
                report.mismatches.append(Mismatch(rel, entry["class"], entry["name"], entry[value], None,
                                                  f"class outside the model's {classifier.num_classes}"))
                continue
            try:
                pixels.append(_load_pixels(gallery, str(rel), shape, factor))
            except ValueError as exc:
                report.mismatches.append(Mismatch(rel, entry["class"], entry["name"], entry[value],
                                                  None, str(exc)))
                continue
            targets.append((rel, entry))
    if pixels:
        fitness = evaluator.log_probs(torch.from_numpy(np.stack(pixels)))
        rescored = (fitness if kind == SCORE else fitness.exp()).cpu().numpy()
        for row, (rel, entry) in zip(rescored, targets):
            p = float(row[int(entry["class"])])
            if abs(p - float(entry[value])) > tolerance:
                report.mismatches.append(Mismatch(rel, entry["class"], entry["name"], entry[value], p))
    return report
