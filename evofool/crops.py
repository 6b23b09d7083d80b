"""10-crop scoring, as in the original fooling-images code (Caffe's ``oversample``).

Images are rendered at 256×256 for a 224×224 model; each is scored as the mean softmax
over its four corner crops, its centre crop and the horizontal mirrors of those five.
A fooling image must then fool the model wherever it looks, not at one exact framing.
"""

from __future__ import annotations

import torch
from torch import nn

from evofool.errors import EvofoolError
from evofool.models.base import Classifier
from evofool.models.outputs import PROBS, SCORES, mean_of_stacked, probabilities_from_outputs

# Render size = crop size · 256/224, the usual ImageNet resize/crop ratio.
RENDER_RATIO = 256 / 224
NUM_CROPS = 10
CROP_CHOICES = (1, NUM_CROPS)  # what --crops takes: one crop (the image), or the original's 10


def render_size(crop: int) -> int:
    """The side an image is rendered at so that a ``crop`` × ``crop`` window is the model's input."""
    return int(round(crop * RENDER_RATIO))


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """``(top, left)`` of the 4 corner crops (top-left, top-right, bottom-left, bottom-right) and the centre one."""
    bottom, right = height - crop_h, width - crop_w
    return [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]


def ten_crops(x: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """``N×C×H×W`` → ``10×N×C×crop_h×crop_w``: the 5 crops, then their horizontal mirrors."""
    five = torch.stack([x[:, :, t:t + crop_h, l:l + crop_w]
                        for t, l in crop_offsets(x.shape[-2], x.shape[-1], crop_h, crop_w)])
    return torch.cat([five, five.flip(-1)])


class TenCropModule(nn.Module):
    """Mean softmax of a base model over the 10 crops of each image, in one forward pass.

    Takes ``[0, 1]`` pixels at render size (the base classifier's preprocessing runs
    here, after cropping) and returns ``N×K`` float64 probabilities: float64 so that
    confidences near 1 keep their resolution when the evaluator takes the log.
    """

    def __init__(self, base: Classifier) -> None:
        super().__init__()
        self.base = base.module  # a submodule, so that .to(device) moves it too
        self.preprocess = base.preprocess
        self.base_outputs = base.outputs
        self.crop_h, self.crop_w = base.input_shape[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        crops = ten_crops(x, self.crop_h, self.crop_w).flatten(0, 1)  # crop-major: 10·N images
        probs = probabilities_from_outputs(self.base(self.preprocess(crops)), self.base_outputs)
        return mean_of_stacked(probs.reshape(NUM_CROPS, n, -1))


class TenCropClassifier:
    """Builds 10-crop classifiers; ``TenCropClassifier.wrap(classifier)`` is the entry point."""

    @staticmethod
    def wrap(classifier: Classifier) -> Classifier:
        """A classifier that scores ``classifier`` by 10-crop averaging.

        Its ``input_shape`` is ``(C, H·256/224, W·256/224)`` — (3, 256, 256) for a 224 model —
        its ``outputs`` are ``"probs"``, and its preprocessing is the identity (the base
        preprocessing runs inside, on the crops). Works for any classifier with class
        outputs (``logits`` or ``probs``).

        Raises:
            EvofoolError: ``classifier`` returns raw unit scores (``unit:`` specs), which have
                no probabilities to average.
        """
        if classifier.outputs == SCORES:
            raise EvofoolError(f"--crops {NUM_CROPS} averages class probabilities over crops; "
                               f"{classifier.spec} returns raw unit scores: use --crops 1")
        channels, crop_h, crop_w = classifier.input_shape
        return Classifier(
            spec=classifier.spec,
            module=TenCropModule(classifier),
            input_shape=(channels, render_size(crop_h), render_size(crop_w)),
            class_names=list(classifier.class_names),
            outputs=PROBS,
            resize_inputs=classifier.resize_inputs,
            meta={**classifier.meta, "crops": NUM_CROPS, "crop_shape": [crop_h, crop_w]},
        )
