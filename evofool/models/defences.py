"""Simple defences as model specs: ensembles and input smoothing.

* ``ensemble:SPEC,SPEC,...`` — the mean of the members' softmax outputs (a classic
  way to make fooling images harder: one image must fool every member at once).
  All members must take the same input shape and have the same class names.
  Members are split on commas, so a member spec cannot itself contain a comma
  (an ``ensemble:`` cannot be nested inside another; ``smooth:`` members can).
* ``smooth:gauss=SIGMA:SPEC`` — the inner model applied to the input blurred by a
  Gaussian of standard deviation ``SIGMA`` pixels (an input-smoothing defence: it
  removes the high-frequency patterns that direct-encoded fooling images and small
  adversarial perturbations rely on). ``SIGMA = 0`` is the plain model.

Both work anywhere a model spec does (``evofool run --model ...``, ``classify``...).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from evofool.errors import EvofoolError
from evofool.models import load_model
from evofool.models.base import Classifier
from evofool.models.outputs import PROBS, SCORES, mean_of_stacked, probabilities_from_outputs


# --- Gaussian blur -------------------------------------------------------------------------------
# The largest blur std accepted, in pixels. The kernel spans 6 sigma and each image is padded
# by 3 sigma a side, so memory grows with sigma; at 100 px a 224-px image is already near one
# flat colour, so larger ones would only cost memory (sigma 1e308 made the kernel's length overflow).
MAX_BLUR_SIGMA = 100.0


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """A normalised 1-D Gaussian of std ``sigma`` pixels, radius ``ceil(3·sigma)``."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blurs ``N×C×H×W`` images with a separable Gaussian (std ``sigma`` px); differentiable.

    Borders are padded by replicating the edge pixels, so a blurred constant image stays
    constant and nothing dark leaks in from outside. ``sigma <= 0`` returns ``x`` unchanged.
    """
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r, c = k.numel() // 2, x.shape[1]
    # Each axis is padded by its own pass so any radius works, even one larger than the image.
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# --- modules -------------------------------------------------------------------------------------
class _Member(nn.Module):
    """One classifier as a module mapping [0, 1] pixels to float64 probabilities."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.net = classifier.module
        # An nn.Module preprocess (Normalize) is registered so .to(device) moves it too.
        self.preprocess = classifier.preprocess
        self.outputs = classifier.outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities_from_outputs(self.net(self.preprocess(x)), self.outputs)


class EnsembleModule(nn.Module):
    """Mean of the members' softmax outputs (float64 probabilities, ``N×K``)."""

    def __init__(self, members: list[Classifier]) -> None:
        super().__init__()
        self.members = nn.ModuleList(_Member(m) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_of_stacked(torch.stack([m(x) for m in self.members]))


class SmoothedModule(nn.Module):
    """Gaussian blur of the [0, 1] input, then the inner classifier's preprocess and module."""

    def __init__(self, inner: Classifier, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.net = inner.module
        self.preprocess = inner.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(gaussian_blur(x, self.sigma)))


# --- loaders (registered as the ``ensemble`` and ``smooth`` prefixes) ---------------------------
def _load_member(spec: str, device: torch.device | str, where: str) -> Classifier:
    try:
        return load_model(spec, device)
    except EvofoolError as exc:
        raise EvofoolError(f"{where} {spec!r}: {exc}") from None


def load_ensemble(arg: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """``ensemble:A,B,...`` → a classifier returning the mean of the members' softmax.

    Raises:
        EvofoolError: an empty or unloadable member, or members that differ in input
            shape or class names.
    """
    specs = [s.strip() for s in arg.split(",")]
    if any(not s for s in specs):
        raise EvofoolError(f"model spec {spec!r} has an empty ensemble member "
                           f"(use ensemble:SPEC,SPEC,...)")
    members = [_load_member(s, device, f"ensemble member {i + 1}") for i, s in enumerate(specs)]
    for i, m in enumerate(members, start=1):
        if m.outputs == SCORES:  # a mean of softmaxes needs class scores, not unit activations
            raise EvofoolError(f"ensemble member {i} {m.spec!r} outputs raw unit activations; "
                               f"ensemble members must be classifiers")
    first = members[0]
    for i, m in enumerate(members[1:], start=2):
        if tuple(m.input_shape) != tuple(first.input_shape):
            raise EvofoolError(f"ensemble member {i} {m.spec!r} takes C×H×W = {tuple(m.input_shape)} but "
                               f"member 1 {first.spec!r} takes {tuple(first.input_shape)}")
        if list(m.class_names) != list(first.class_names):
            raise EvofoolError(f"ensemble member {i} {m.spec!r} has {m.num_classes} classes that differ "
                               f"from member 1 {first.spec!r} ({first.num_classes} classes)")
    return Classifier(spec=spec, module=EnsembleModule(members).to(device).eval(),
                      input_shape=tuple(first.input_shape), class_names=list(first.class_names),
                      outputs=PROBS, resize_inputs=all(m.resize_inputs for m in members),
                      meta={"defence": "ensemble", "members": specs})


def parse_smooth(arg: str, spec: str) -> tuple[float, str]:
    """``gauss=1.5:lenet-mnist`` → ``(1.5, "lenet-mnist")``.

    Raises:
        EvofoolError: not of that form, or a negative / non-finite sigma.
    """
    head, sep, inner = arg.partition(":")
    name, eq, value = head.partition("=")
    usage = "smooth:gauss=SIGMA:SPEC, e.g. smooth:gauss=1:lenet-mnist"
    if not sep or not inner.strip() or name.strip() != "gauss" or not eq:
        raise EvofoolError(f"model spec {spec!r} is not of the form {usage}")
    try:
        sigma = float(value)
    except ValueError:
        raise EvofoolError(f"model spec {spec!r}: gauss={value!r} is not a number ({usage})") from None
    if not 0 <= sigma <= MAX_BLUR_SIGMA:  # also refuses nan and inf
        raise EvofoolError(f"model spec {spec!r}: the blur sigma must lie in 0..{MAX_BLUR_SIGMA:g} pixels "
                           f"(got {value})")
    return sigma, inner.strip()


def load_smooth(arg: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """``smooth:gauss=SIGMA:SPEC`` → the inner classifier behind a Gaussian blur of its input."""
    sigma, inner_spec = parse_smooth(arg, spec)
    inner = _load_member(inner_spec, device, "smoothed model")
    return Classifier(spec=spec, module=SmoothedModule(inner, sigma).to(device).eval(),
                      input_shape=tuple(inner.input_shape), class_names=list(inner.class_names),
                      outputs=inner.outputs, resize_inputs=inner.resize_inputs,
                      meta={"defence": "smooth", "gauss_sigma": sigma, "inner": inner_spec})
