"""``unit:LAYER.CHANNEL[,LAYER.CHANNEL...]:SPEC``: activation maximisation with the same engine.

The "classes" of such a model are the named units (channels of inner layers of the
model ``SPEC``). A forward hook on each named layer reads its output; a unit's fitness
is the channel's mean activation over space (a ``Linear`` layer's output has no space:
its value is the activation itself). The wrapped ``Classifier`` has
``outputs="scores"``: the evaluator uses the raw float64 values as fitness (no softmax),
and the archive reports them as they are.

Examples::

    unit:conv2.5,conv2.7:lenet-mnist      channels 5 and 7 of LeNet's second conv layer
    unit:ip1.42:lenet:runs/x/model.safetensors

Layer names are those of ``module.named_modules()`` (they may contain dots, so the
channel is what follows the last dot). The forward pass stops as soon as every named
layer has produced its output, so units in early layers cost only those layers. A
module called more than once in one forward pass contributes its first call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evofool.errors import EvofoolError
from evofool.models import PREFIX_LOADERS, load_model
from evofool.models.base import Classifier
from evofool.models.outputs import SCORES

USAGE = PREFIX_LOADERS["unit"].usage  # as 'evofool models' lists it


@dataclass(frozen=True)
class Unit:
    """One channel of one named layer."""

    layer: str
    channel: int

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.channel}"


def parse_units(arg: str) -> tuple[list[Unit], str]:
    """``"conv2.5,conv2.7:lenet-mnist"`` → ``([Unit("conv2", 5), Unit("conv2", 7)], "lenet-mnist")``.

    Raises:
        EvofoolError: no inner spec, an item without ``.CHANNEL``, a negative or non-integer
            channel, or a unit listed twice.
    """
    units_text, sep, inner = arg.partition(":")
    if not sep or not inner.strip() or not units_text.strip():
        raise EvofoolError(f"unit spec needs units and a model: {USAGE} (got 'unit:{arg}')")
    units: list[Unit] = []
    for item in (s.strip() for s in units_text.split(",")):
        layer, dot, channel = item.rpartition(".")
        if not dot or not layer or not channel.isdigit():
            raise EvofoolError(f"unit {item!r} is not LAYER.CHANNEL (e.g. conv2.5); spec: {USAGE}")
        unit = Unit(layer, int(channel))
        if unit in units:
            raise EvofoolError(f"unit {unit.name} is listed twice")
        units.append(unit)
    return units, inner.strip()


class _Done(Exception):
    """Raised by a hook once every named layer has been read (ends the forward pass early)."""


def channel_means(output: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """``N×C[×H×W...]`` layer output → ``N×len(channels)`` mean activation over space."""
    picked = output[:, channels]
    return picked.flatten(2).mean(dim=2) if picked.dim() > 2 else picked


class UnitActivations(nn.Module):
    """Wraps a network; ``forward`` returns the named units' mean activations (``N×U``).

    Each hook reduces its layer's output to the wanted channels' means at once, so
    later in-place operations (``ReLU(inplace=True)``) cannot change what was read.

    Args:
        net: The inner network (its ``preprocess`` is applied before, by the evaluator).
        units: The units to read, in output order.

    Raises:
        EvofoolError: a layer name that ``net`` does not have.
    """

    def __init__(self, net: nn.Module, units: list[Unit]) -> None:
        super().__init__()
        self.net = net
        self.units = list(units)
        modules = dict(net.named_modules())
        self._layers: dict[str, list[int]] = {}
        for u in self.units:
            if u.layer not in modules or u.layer == "":
                known = ", ".join(n for n in modules if n) or "(none)"
                raise EvofoolError(f"the model has no layer {u.layer!r}; its layers: {known}")
            self._layers.setdefault(u.layer, []).append(u.channel)
        self._read: dict[str, torch.Tensor] = {}
        try:
            self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self._layers]
        except RuntimeError as exc:  # e.g. TorchScript modules
            raise EvofoolError(f"cannot read layers of this model ({str(exc).strip().splitlines()[0]})") from None

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if name in self._read or not isinstance(output, torch.Tensor):
                return
            if output.dim() < 2:
                raise EvofoolError(f"layer {name!r} outputs shape {tuple(output.shape)}, "
                                   "which has no channel dimension")
            size = output.shape[1]
            bad = [c for c in self._layers[name] if c >= size]
            if bad:
                raise EvofoolError(f"layer {name!r} has {size} channels (0..{size - 1}); "
                                   f"no channel {bad[0]}")
            self._read[name] = channel_means(output, self._layers[name])
            if len(self._read) == len(self._layers):
                raise _Done

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (already preprocessed) → ``N×U`` float unit activations."""
        self._read = {}
        try:
            self.net(x)
        except _Done:
            pass
        missing = [name for name in self._layers if name not in self._read]
        if missing:
            raise EvofoolError(f"layer {missing[0]!r} produced no tensor output in a forward pass")
        read, seen = self._read, {name: 0 for name in self._layers}
        self._read = {}
        columns = []
        for u in self.units:
            columns.append(read[u.layer][:, seen[u.layer]])
            seen[u.layer] += 1
        return torch.stack(columns, dim=1)


def unit_classifier(inner: Classifier, units: list[Unit], spec: str,
                    device: torch.device | str = "cpu") -> Classifier:
    """A ``Classifier`` whose "classes" are ``units`` of ``inner``'s network (``outputs="scores"``).

    One forward pass on a blank image checks now that every layer and channel exists.

    Raises:
        EvofoolError: unknown layer, channel out of range, a layer without channels.
    """
    module = UnitActivations(inner.module, units).to(device).eval()
    probe = torch.zeros(1, *inner.input_shape, device=device)
    with torch.inference_mode():
        module(inner.preprocess(probe))
    return Classifier(spec=spec, module=module, input_shape=tuple(inner.input_shape),
                      class_names=[u.name for u in units], preprocess=inner.preprocess,
                      outputs=SCORES, resize_inputs=inner.resize_inputs,
                      meta={"inner": inner.spec, "units": [u.name for u in units], **inner.meta})


def load_units(arg: str, spec: str, device: torch.device | str = "cpu") -> Classifier:
    """Loads ``unit:ARG`` (the registry's ``unit`` prefix loader).

    Raises:
        EvofoolError: a malformed spec, or the inner model's or a unit's error.
    """
    from evofool.models.onnx import require_gradients

    units, inner_spec = parse_units(arg)
    inner = load_model(inner_spec, device)
    if inner.outputs == SCORES:
        raise EvofoolError(f"unit specs need a network inside, not another unit model ({inner_spec})")
    # A black-box model (onnx:) has no torch layers to hook: say so, not "no layer 'conv2'".
    require_gradients(inner, "a unit: spec", needs="a torch network's layers",
                      instead="use a torch copy of the model (lenet:PATH, torchvision:NAME)")
    return unit_classifier(inner, units, spec, device)
