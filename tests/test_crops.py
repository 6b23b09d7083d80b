"""10-crop scoring: shapes, one batched pass, and equality with a plain per-crop loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evofool.crops import TenCropClassifier, crop_offsets, render_size
from evofool.evaluator import BatchEvaluator
from evofool.models.base import Classifier
from evofool.models.normalize import Normalize


class SmallNet(nn.Module):
    """A position-sensitive conv net (no global pooling), so every crop scores differently."""

    def __init__(self, channels: int, side: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * side * side, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def small_classifier(channels: int = 3, side: int = 14, classes: int = 5, outputs: str = "logits") -> Classifier:
    torch.manual_seed(0)
    net = SmallNet(channels, side, classes).eval()
    module = nn.Sequential(net, nn.Softmax(dim=1)) if outputs == "probs" else net
    return Classifier(spec="small", module=module, input_shape=(channels, side, side),
                      class_names=[f"c{i}" for i in range(classes)],
                      preprocess=Normalize([0.5] * channels, [0.25] * channels), outputs=outputs,
                      resize_inputs=True, meta={"note": "kept"})


def reference_ten_crop(base: Classifier, images: torch.Tensor) -> torch.Tensor:
    """The original's scoring written out: one crop of one image at a time (float64 result)."""
    _, h, w = base.input_shape
    rows = []
    with torch.no_grad():
        for image in images:
            H, W = image.shape[-2:]
            crops = [image[:, :h, :w], image[:, :h, W - w:], image[:, H - h:, :w], image[:, H - h:, W - w:],
                     image[:, (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]]
            crops += [torch.flip(c, dims=[2]) for c in crops]
            total = torch.zeros(base.num_classes, dtype=torch.float64)
            for crop in crops:
                out = base.module(base.preprocess(crop[None]))[0].double()
                total += out if base.outputs == "probs" else torch.softmax(out, 0)
            rows.append(total / 10)
    return torch.stack(rows)


def test_render_size_and_offsets():
    assert render_size(224) == 256 and render_size(28) == 32 and render_size(14) == 16
    assert crop_offsets(256, 256, 224, 224) == [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]


@pytest.mark.parametrize("shape, wrapped", [((3, 224, 224), (3, 256, 256)), ((1, 28, 28), (1, 32, 32)),
                                            ((3, 14, 21), (3, 16, 24))])
def test_wrapped_shape(shape, wrapped):
    base = Classifier(spec="s", module=nn.Identity(), input_shape=shape, class_names=["a", "b"])
    assert TenCropClassifier.wrap(base).input_shape == wrapped


@pytest.mark.parametrize("outputs", ["logits", "probs"])
def test_equals_per_crop_loop(outputs):
    base = small_classifier(outputs=outputs)
    wrapped = TenCropClassifier.wrap(base)
    assert wrapped.input_shape == (3, 16, 16) and wrapped.outputs == "probs"
    assert wrapped.class_names == base.class_names and wrapped.resize_inputs
    assert wrapped.meta["note"] == "kept" and wrapped.meta["crops"] == 10
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = wrapped.module(wrapped.preprocess(images))
    want = reference_ten_crop(base, images)
    assert got.shape == (6, 5) and got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(got.sum(1), torch.ones(6, dtype=torch.float64), atol=1e-6)


def test_non_square_and_greyscale():
    base = small_classifier(channels=1, side=7, classes=3)  # 7 → 8: crops at offsets 0 and 1
    wrapped = TenCropClassifier.wrap(base)
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = wrapped.module(images)
    assert torch.allclose(got, reference_ten_crop(base, images), atol=1e-5, rtol=0)


def test_one_batched_forward_pass_through_the_evaluator():
    base = small_classifier()
    calls: list[int] = []
    base.module.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    wrapped = TenCropClassifier.wrap(base)
    images = (torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    evaluator = BatchEvaluator(wrapped, device="cpu")
    scores = evaluator.evaluate(images)
    assert calls == [10 * evaluator.chunk]  # one pass: 10 crops of each image of the padded chunk
    want = reference_ten_crop(base, images.float() / 255)
    assert torch.allclose(scores.probs, want, atol=1e-5, rtol=0)
    assert torch.allclose(scores.log_probs, want.log(), atol=1e-4, rtol=0)


def test_build_engine_wraps_when_crops_is_10():
    from evofool.config import RunConfig
    from evofool.job import build_engine

    engine, classifier = build_engine(RunConfig(model="lenet-mnist", crops=10, population=3, device="cpu"))
    assert classifier.input_shape == (1, 32, 32) and classifier.outputs == "probs"
    record = engine.step()
    assert record["generation"] == 1


def test_raw_unit_scores_are_refused():
    """Unit activations have no softmax to average over crops: refused when wrapped, not softmaxed."""
    from evofool.errors import EvofoolError

    with pytest.raises(EvofoolError, match="returns raw unit scores: use --crops 1"):
        TenCropClassifier.wrap(small_classifier(outputs="scores"))


class PixelLogits(nn.Module):
    """Logits that are 10 of each image's own pixels, scaled: no convolution or matrix product,
    whose kernels (and so whose bits) torch may choose by batch size, so only the crops' mean
    can make a row depend on the chunk."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, ::17][:, :10] * 8.0


def test_ten_crop_scores_do_not_depend_on_the_chunk():
    """--crops 10 scored by torch: the same bits at chunks of 100, 50, 30 and 25 images (the mean
    over crops once changed 2-3 rows of 100 at 30 and 25)."""
    from evofool.devices import torch_threads

    base = Classifier(spec="pixels", module=PixelLogits(), input_shape=(1, 28, 28),
                      class_names=[str(i) for i in range(10)], resize_inputs=True)
    wrapped = TenCropClassifier.wrap(base)
    images = torch.randint(0, 256, (100, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    scores = []
    with torch_threads(1):
        for chunk in (100, 50, 30, 25):
            evaluator = BatchEvaluator(wrapped, device="cpu", max_batch=chunk)
            assert evaluator.chunk == chunk
            scores.append(evaluator.log_probs(images))
    for other in scores[1:]:
        assert torch.equal(other, scores[0])
