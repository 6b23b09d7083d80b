"""Minimal adversarial perturbations by box-constrained L-BFGS (Szegedy et al. 2013).

For an image ``x`` and a target class ``t`` the paper solves::

    minimise  c·‖r‖² + loss(x + r, t)   subject to  x + r ∈ [0, 1]

with a line search over ``c`` for the smallest ``r`` that makes the model say ``t``.
Here ``loss`` is the cross-entropy ``-log p(t | x + r)``, and the box is kept by
optimising the perturbed image ``z`` with ``torch.optim.LBFGS`` on the clamped image
``clamp(z, 0, 1)`` and projecting ``z`` back into the box between rounds (clamp's
gradient passes at the bounds, so projected pixels can move back inside).

Everything is batched: all images are solved together (their objectives are summed;
each has its own ``c``), and the search over ``c`` runs per image in lock-step:
``c`` starts large and is divided by ``shrink`` until the target is reached, then
bisected (geometrically) between the largest ``c`` that worked and the smallest that
failed. Success is judged on the 8-bit image exactly as saved, and the smallest
successful perturbation found is kept.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from evofool import __version__
from evofool.errors import EvofoolError
from evofool.evaluator import BatchEvaluator
from evofool.experiments import class_log_probs, quantise
from evofool.imageio import load_image, save_png
from evofool.models.base import Classifier
from evofool.models.onnx import require_gradients
from evofool.runfolder import slug, write_json_atomic

REPORT = "perturb.json"


@dataclass
class PerturbSettings:
    """The search's knobs.

    Attributes:
        c_start: First ``c`` tried (large: almost no perturbation allowed).
        shrink: ``c`` is divided (or multiplied) by this until the result flips.
        search_steps: Batched solves in the search over ``c`` (bracketing + bisection).
        tolerance: Stop refining an image once its bracket ``c_fail / c_ok`` is below this.
        max_iter: L-BFGS iterations per projection round.
        rounds: Projection rounds per solve.
    """

    c_start: float = 10.0
    shrink: float = 10.0
    search_steps: int = 10
    tolerance: float = 1.3
    max_iter: int = 50
    rounds: int = 1

    def validate(self) -> "PerturbSettings":
        if not (self.c_start > 0 and self.shrink > 1 and self.tolerance > 1):
            raise EvofoolError("c_start must be positive, shrink and tolerance above 1")
        if self.search_steps < 1 or self.max_iter < 1 or self.rounds < 1:
            raise EvofoolError("search_steps, max_iter and rounds must be at least 1")
        return self


@dataclass
class PerturbResult:
    """Per image (``N`` of them): the best perturbation found.

    Attributes:
        originals: ``N×C×H×W`` uint8 images.
        perturbed: ``N×C×H×W`` uint8 perturbed images, as saved (the last attempt where
            no attempt succeeded).
        targets: ``N`` target classes.
        predicted_before: ``N`` classes the model gives the originals.
        predicted_after: ``N`` classes it gives the perturbed images.
        target_confidence: ``N`` probability of the target for the perturbed images.
        success: ``N`` bools: the perturbed image is classified as the target.
        distortion: ``N`` √(Σr²/n), pixels in [0, 1], n = number of pixels.
        c: ``N`` the ``c`` of the solve that gave the perturbed image.
        seconds: Wall time of the search.
    """

    originals: torch.Tensor
    perturbed: torch.Tensor
    targets: torch.Tensor
    predicted_before: torch.Tensor
    predicted_after: torch.Tensor
    target_confidence: torch.Tensor
    success: torch.Tensor
    distortion: torch.Tensor
    c: torch.Tensor
    seconds: float

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())

    @property
    def mean_distortion(self) -> float:
        """Mean distortion of the successful images (NaN if none succeeded)."""
        return float(self.distortion[self.success].mean()) if bool(self.success.any()) else math.nan


def distortion(perturbed: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Szegedy's distortion √(Σ(x' - x)²/n) per image, pixels scaled to [0, 1]."""
    diff = (perturbed.to(torch.float64) - originals.to(torch.float64)) / 255.0
    return diff.flatten(1).pow(2).mean(1).sqrt()


def solve(classifier: Classifier, x: torch.Tensor, targets: torch.Tensor, c: torch.Tensor,
          max_iter: int, rounds: int) -> torch.Tensor:
    """One batched box-constrained L-BFGS solve; returns the perturbed images as uint8.

    Args:
        x: ``N×C×H×W`` float originals in [0, 1].
        targets: ``N`` target classes.
        c: ``N`` weights of ``‖r‖²``.
    """
    z = x.clone().requires_grad_(True)
    t = targets.view(-1, 1)
    c = c.to(torch.float64)
    for _ in range(rounds):
        # A fresh optimiser per round: the projection invalidates the curvature history.
        opt = torch.optim.LBFGS([z], lr=1.0, max_iter=max_iter, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure() -> torch.Tensor:
            boxed = z.clamp(0.0, 1.0)
            norm2 = (boxed - x).flatten(1).pow(2).sum(1, dtype=torch.float64)
            nll = -class_log_probs(classifier, boxed).gather(1, t).squeeze(1)
            loss = (c * norm2 + nll).sum()
            # Gradient for z only: the model's weights need none (and must not accumulate one).
            (z.grad,) = torch.autograd.grad(loss, z)
            return loss.detach()

        opt.step(closure)
        with torch.no_grad():
            z.clamp_(0.0, 1.0)
    return quantise(z)


def minimal_perturbations(classifier: Classifier, images: torch.Tensor, targets: torch.Tensor,
                          settings: PerturbSettings | None = None,
                          device: torch.device | str = "cpu") -> PerturbResult:
    """Searches, for every image, the smallest perturbation the model classifies as its target.

    Args:
        classifier: The model.
        images: ``N×C×H×W`` uint8 images of the model's input shape.
        targets: ``N`` target class indices.
        settings: Search knobs (defaults if ``None``).
        device: Where to compute.

    Raises:
        EvofoolError: images of the wrong shape, targets out of range, bad settings, or a
            black-box model (``onnx:``: no gradients).
    """
    require_gradients(classifier, "perturb")
    settings = (settings or PerturbSettings()).validate()
    start = time.perf_counter()
    device = torch.device(device)
    evaluator = BatchEvaluator(classifier, device=device)
    evaluator.check_shape(images)
    n = images.shape[0]
    targets = torch.as_tensor(targets, dtype=torch.int64).to(device)
    if targets.shape != (n,) or bool(((targets < 0) | (targets >= classifier.num_classes)).any()):
        raise EvofoolError(f"targets must be {n} class indices in 0..{classifier.num_classes - 1}")
    originals = images.to(device)
    x = originals.to(torch.float32) / 255.0
    before = evaluator.log_probs(originals).argmax(1)

    best = originals.clone()
    best_d = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    best_c = torch.full((n,), math.nan, dtype=torch.float64, device=device)
    ok_any = torch.zeros(n, dtype=torch.bool, device=device)
    c_ok = torch.full((n,), math.nan, dtype=torch.float64, device=device)    # largest c that worked
    c_fail = torch.full((n,), math.nan, dtype=torch.float64, device=device)  # smallest c that failed
    c = torch.full((n,), settings.c_start, dtype=torch.float64, device=device)
    for _ in range(settings.search_steps):
        bracketed = ~torch.isnan(c_ok) & ~torch.isnan(c_fail)
        active = ~(bracketed & (c_fail / c_ok < settings.tolerance))
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        q = solve(classifier, x[idx], targets[idx], c[idx], settings.max_iter, settings.rounds)
        ok = evaluator.log_probs(q).argmax(1) == targets[idx]
        d = distortion(q, originals[idx])
        # Keep the smallest successful perturbation; without any success, the latest attempt.
        keep = (ok & (d < best_d[idx])) | (~ok & ~ok_any[idx])
        best[idx[keep]] = q[keep]
        best_d[idx[keep]] = torch.where(ok[keep], d[keep], math.inf)
        best_c[idx[keep]] = c[idx[keep]]
        ok_any[idx] |= ok
        ci = c[idx]
        c_ok[idx] = torch.where(ok, torch.fmax(c_ok[idx], ci), c_ok[idx])
        c_fail[idx] = torch.where(~ok, torch.fmin(c_fail[idx], ci), c_fail[idx])
        has_ok, has_fail = ~torch.isnan(c_ok[idx]), ~torch.isnan(c_fail[idx])
        c[idx] = torch.where(has_ok & has_fail, torch.sqrt(c_ok[idx] * c_fail[idx]),
                             torch.where(has_fail, c_fail[idx] / settings.shrink, c_ok[idx] * settings.shrink))
    probs = evaluator.evaluate(best).probs
    after = probs.argmax(1)
    return PerturbResult(originals=originals, perturbed=best, targets=targets, predicted_before=before,
                         predicted_after=after, target_confidence=probs.gather(1, targets.view(-1, 1)).squeeze(1),
                         success=after == targets, distortion=distortion(best, originals), c=best_c,
                         seconds=time.perf_counter() - start)


# --- output ----------------------------------------------------------------------------------------
def difference_image(perturbed: torch.Tensor, original: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``r`` made visible: mid-grey 128 = unchanged, scaled so the largest change spans ±127.

    Returns:
        The uint8 image and the scale (change in [0, 1] units that maps to ±127).
    """
    diff = perturbed.to(torch.float32) - original.to(torch.float32)
    scale = max(float(diff.abs().max()), 1.0)
    return (128.0 + diff * (127.0 / scale)).round().clamp(0, 255).to(torch.uint8), scale / 255.0


def default_out(model: str, root: str | Path = "runs") -> Path:
    """``runs/perturb-<model>``, with ``-2``, ``-3``... when that is taken."""
    base = Path(root) / f"perturb-{slug(model)}"
    path, n = base, 1
    while path.exists() and any(path.iterdir()):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def prepare_out(out: str | Path) -> Path:
    """Creates the output folder; refuses a file or a non-empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvofoolError(f"{out} is not an empty folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_outputs(out: Path, classifier: Classifier, result: PerturbResult, sources: list[str],
                  labels: list[int | None], settings: PerturbSettings) -> dict:
    """Writes original / perturbed / difference PNGs and ``perturb.json``; returns the report.

    The perturbed PNGs are read back and classified again, so the report's
    ``all_successes_verified`` is about the files exactly as saved.
    """
    names = classifier.class_names
    entries, files = [], []
    for i in range(result.originals.shape[0]):
        diff, scale = difference_image(result.perturbed[i], result.originals[i])
        paths = {kind: f"{i:04d}-{kind}.png" for kind in ("original", "perturbed", "difference")}
        save_png(result.originals[i], out / paths["original"])
        save_png(result.perturbed[i], out / paths["perturbed"])
        save_png(diff, out / paths["difference"])
        files.append(out / paths["perturbed"])
        ok = bool(result.success[i])
        entries.append({
            "index": i, "source": sources[i], "label": labels[i],
            "predicted": names[int(result.predicted_before[i])], "target": names[int(result.targets[i])],
            "perturbed_predicted": names[int(result.predicted_after[i])], "success": ok,
            "target_confidence": float(result.target_confidence[i]),
            "distortion": float(result.distortion[i]), "c": float(result.c[i]) if ok else None,
            "difference_scale": scale, "files": paths})
    # Re-read the PNGs: what a user (or 'evofool classify') sees is what counts.
    with warnings.catch_warnings():
        # load_image wraps Pillow's read-only buffer; harmless here (nothing writes to it).
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        reread = torch.stack([load_image(f, classifier.input_shape) for f in files])
    saved_pred = BatchEvaluator(classifier, device=result.originals.device).log_probs(reread).argmax(1).cpu()
    verified = all(int(saved_pred[i]) == int(result.targets[i]) for i in range(len(files)) if entries[i]["success"])
    report = {"evofool_version": __version__, "method": "box-constrained L-BFGS (Szegedy et al. 2013)",
              "model": classifier.spec, "settings": asdict(settings), "images": len(entries),
              "successes": int(result.success.sum()), "success_rate": result.success_rate,
              "mean_distortion": None if math.isnan(result.mean_distortion) else result.mean_distortion,
              "all_successes_verified": verified, "seconds": round(result.seconds, 3), "results": entries}
    write_json_atomic(out / REPORT, report)
    return report


def find_mnist(data: str | Path | None) -> Path:
    """The MNIST idx folder: ``data``, else ``$EVOFOOL_MNIST_DIR``, else ``../shared/data/mnist``.

    Raises:
        EvofoolError: none of them holds the MNIST test files.
    """
    candidates = [Path(data)] if data is not None else [
        Path(p) for p in (os.environ.get("EVOFOOL_MNIST_DIR"),) if p] + [
        Path("../shared/data/mnist"), Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"]
    for path in candidates:
        if path.is_dir() and any(path.glob("t10k-images*")):
            return path
    where = ", ".join(str(p) for p in candidates)
    raise EvofoolError(f"MNIST test files (t10k-images-idx3-ubyte[.gz]) not found in {where}; pass --data DIR")
