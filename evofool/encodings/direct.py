"""The direct encoding: the genome is the image, one gene per pixel channel.

Genomes are stored as uint8 tensors ``B×C×H×W`` — exactly the 8-bit image that is
scored and saved — so an exported PNG fools the model exactly as much as the
archive says. Variation works on the batch in [0, 1] floats and re-quantises.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from evofool.devices import copy_rows_, take_rows
from evofool.values import ConfigError, Param
from evofool.encodings.base import Encoding, inert_when, torch_generator
from evofool.operators import (polynomial_bounded, polynomial_bounded_pixels, random_choice_of, random_lattices,
                               random_rings, random_squares, random_waves, simulated_binary_bounded)


MUTATIONS = ("polynomial", "squares", "lattice", "waves", "rings", "patterns")
# Which mutations use which parameters; under the others they compute nothing.
USES = {"polynomial": ("eta", "mutation_rate", "halve_every"),
        "squares": ("squares", "square_min", "square_max"),
        "lattice": ("period_min", "period_max"),
        "waves": ("period_min", "wave_period_max", "amplitude_min", "amplitude_max"),
        "rings": ("period_min", "wave_period_max", "amplitude_min", "amplitude_max")}
USES["patterns"] = tuple(dict.fromkeys(USES["lattice"] + USES["waves"]))


def unused_by(param: str):
    """``Param.inert`` of a mutation parameter: inert under every mutation that does not use it."""
    return inert_when(*(("mutation", m) for m in MUTATIONS if param not in USES[m]))


class DirectEncoding(Encoding):
    """Pixel genomes, each child its parent changed by one whole-image pattern (a painted lattice,
    an added wave or rings; the default, from flat colours), or by the paper's polynomial bounded
    mutation from noise with optional SBX crossover, or by painted squares.

    Args:
        image_shape: ``(C, H, W)`` of the model input.
        device: Where genomes live.
        **params: Any of ``PARAMS`` (each one's default, range and meaning are declared
            there); the rest take their defaults.

    Raises:
        ConfigError: an unknown parameter, or a value of the wrong kind or out of range.
    """

    name = "direct"
    vector_genomes = True
    renders = False  # the genome is the image
    PARAMS = {
        "eta": Param(float, 15.0, low=0.0, low_open=True, inert=unused_by("eta"),
                     help="polynomial mutation crowding degree (paper: 15)"),
        "mutation_rate": Param(float, 0.1, low=0.0, high=1.0, inert=unused_by("mutation_rate"),
                               help="initial per-gene mutation probability (paper: 0.1)"),
        "halve_every": Param(int, 1000, low=0, inert=unused_by("halve_every"),
                             help="the mutation rate halves every this many generations (paper: 1000; 0: never)"),
        "crossover_rate": Param(float, 0.0, low=0.0, high=1.0,
                                help="share of offspring made by SBX crossover first (original code: 0.5; 0: off)"),
        "crossover_eta": Param(float, 10.0, low=0.0, low_open=True, inert=inert_when(("crossover_rate", 0)),
                               help="SBX crowding degree (original code: 10)"),
        # patterns (and init=flat) by default since they were measured (AMD EPYC Zen 4 and Intel
        # Xeon; population 200, seeds 0-4, median generations until all 10 classes >= 99.99 %):
        # lenet-mnist 13 against polynomial from noise's 41, lenet-mnist-b 14 against 43,
        # lenet-fashion 20 against 45; on EfficientNet-Lite0 (population 100, seed 0) a median
        # of 5.80 % at 20k evaluations against 0.13 %. Runs recorded before (no "mutation" or
        # "init" in their encoding_params) mutated by polynomial steps from noise and still do.
        "mutation": Param(str, "patterns", choices=MUTATIONS, legacy="polynomial",
                          help="polynomial: per-pixel polynomial steps (paper); squares: paint "
                               "random squares (Square Attack's step); lattice: paint a random "
                               "rectangle repeated over the image; waves: add a sine grating; rings: "
                               "add concentric rings; patterns: each child one of lattice, waves, rings"),
        "init": Param(str, "flat", choices=("noise", "flat"), legacy="noise",
                      help="first images: noise (uniform per pixel, paper) or flat (one random colour each)"),
        # Black-box on EfficientNet-Lite0 (seed 0, 10k evaluations, Intel Xeon): one square of
        # 2-25 % of the side, median 0.32 % (polynomial, the paper's: 0.11 %); 1-10 %: 0.28 %;
        # 5-50 %: 0.32 %; three squares: 0.33 %. With init=flat: 0.49 % (0.74 % at 50k).
        "squares": Param(int, 1, low=1, high=64, inert=unused_by("squares"),
                         help="squares painted per child (mutation=squares)"),
        "square_min": Param(float, 0.02, low=0.0, high=1.0, low_open=True, inert=unused_by("square_min"),
                            help="smallest square side, a share of the image's shorter side"),
        "square_max": Param(float, 0.25, low=0.0, high=1.0, low_open=True, inert=unused_by("square_max"),
                            help="largest square side, a share of the image's shorter side"),
        # Black-box on EfficientNet-Lite0 (init=flat, population 100, seed 0, 20k evaluations,
        # AMD EPYC Zen 4; squares: 0.55 %): lattice, periods 2-25 % of the side (those of the
        # squares' sides), median 0.99 %; waves alone (periods 2-25 %) 1.63 %; patterns with
        # lattice and waves 2.14 %, with rings too 2.88 %, waves and rings to 50 % 4.97 %, to
        # 100 % 5.80 %; amplitudes 8-64 level with 16-128 at 12.5k, 32-255 behind at 5k.
        "period_min": Param(float, 0.02, low=0.0, high=1.0, low_open=True, inert=unused_by("period_min"),
                            help="shortest period of a lattice, wave or ring pattern, a share of the image's "
                                 "shorter side (at least 2 pixels)"),
        "period_max": Param(float, 0.25, low=0.0, high=1.0, low_open=True, inert=unused_by("period_max"),
                            help="longest lattice period, a share of the image's shorter side"),
        "wave_period_max": Param(float, 1.0, low=0.0, high=4.0, low_open=True, inert=unused_by("wave_period_max"),
                                 help="longest period of a wave or ring pattern, a share of the image's shorter "
                                      "side (above 1: a gradient across the image)"),
        "amplitude_min": Param(float, 16.0, low=0.0, high=255.0, inert=unused_by("amplitude_min"),
                               help="smallest amplitude of a wave or ring pattern, in grey levels"),
        "amplitude_max": Param(float, 128.0, low=0.0, high=255.0, inert=unused_by("amplitude_max"),
                               help="largest amplitude of a wave or ring pattern, in grey levels"),
    }

    def __init__(self, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                 **params) -> None:
        super().__init__(image_shape, device)
        p = self.check_params(params)
        self.eta = float(p["eta"])
        self.mutation_rate = float(p["mutation_rate"])
        self.halve_every = int(p["halve_every"])
        self.crossover_rate = float(p["crossover_rate"])
        self.crossover_eta = float(p["crossover_eta"])
        self.mutation = p["mutation"]
        self.init = p["init"]
        self.squares = int(p["squares"])
        self.square_min = float(p["square_min"])
        self.square_max = float(p["square_max"])
        self.period_min = float(p["period_min"])
        self.period_max = float(p["period_max"])
        self.wave_period_max = float(p["wave_period_max"])
        self.amplitude = (float(p["amplitude_min"]), float(p["amplitude_max"]))
        for low, high in (("square_min", "square_max"), ("period_min", "period_max"),
                          ("period_min", "wave_period_max"), ("amplitude_min", "amplitude_max")):
            if p[low] > p[high]:
                raise ConfigError(f"encoding direct: {low} ({p[low]:g}) must not exceed {high} ({p[high]:g})")
        if self.mutation != "polynomial" and self.crossover_rate > 0:
            raise ConfigError(f"encoding direct: crossover_rate applies to mutation=polynomial (the paper's); "
                              f"add --param mutation=polynomial, or leave it 0 with mutation={self.mutation}")

    def config(self) -> dict:
        return {"eta": self.eta, "mutation_rate": self.mutation_rate, "halve_every": self.halve_every,
                "crossover_rate": self.crossover_rate, "crossover_eta": self.crossover_eta,
                "mutation": self.mutation, "init": self.init, "squares": self.squares, "square_min": self.square_min,
                "square_max": self.square_max, "period_min": self.period_min, "period_max": self.period_max,
                "wave_period_max": self.wave_period_max, "amplitude_min": self.amplitude[0],
                "amplitude_max": self.amplitude[1]}

    def rate_at(self, generation: int) -> float:
        """The per-gene mutation probability used at ``generation``."""
        if self.halve_every <= 0:
            return self.mutation_rate
        return self.mutation_rate * 0.5 ** (generation // self.halve_every)

    def random(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        gen = torch_generator(rng, self.device)
        if self.init == "flat":
            colour = torch.randint(0, 256, (n, self.image_shape[0], 1, 1), generator=gen, device=self.device,
                                   dtype=torch.uint8)
            return colour.expand(n, *self.image_shape).contiguous()
        return torch.randint(0, 256, (n, *self.image_shape), generator=gen, device=self.device,
                             dtype=torch.uint8)

    def vary(self, parents: torch.Tensor, rng: np.random.Generator, generation: int) -> torch.Tensor:
        patterns = {"lattice": lambda p: random_lattices(p, self.period_min, self.period_max, rng),
                    "waves": lambda p: random_waves(p, self.period_min, self.wave_period_max, rng, self.amplitude),
                    "rings": lambda p: random_rings(p, self.period_min, self.wave_period_max, rng, self.amplitude)}
        if self.mutation in patterns:
            return patterns[self.mutation](parents)
        if self.mutation == "patterns":
            return random_choice_of(parents, list(patterns.values()), rng)
        if self.mutation == "squares":
            return random_squares(parents, self.squares, self.square_min, self.square_max, rng)
        gen = torch_generator(rng, self.device)
        if self.crossover_rate <= 0 or parents.shape[0] < 2:
            # Mutation only (the default): just the mutated pixels leave uint8.
            return polynomial_bounded_pixels(parents, self.eta, self.rate_at(generation), gen)
        x = parents.to(torch.float32).div_(255.0)
        n = x.shape[0]
        # Each selected offspring is crossed with a random other parent of the batch.
        mates = x[torch.randint(0, n, (n,), generator=gen, device=self.device)]
        chosen = torch.rand(n, generator=gen, device=self.device) < self.crossover_rate
        child, _ = simulated_binary_bounded(x, mates, self.crossover_eta, 0.0, 1.0, 0.5, gen)
        x = torch.where(chosen.view(-1, 1, 1, 1), child, x)
        x = polynomial_bounded(x, self.eta, 0.0, 1.0, self.rate_at(generation), gen)
        return x.mul_(255.0).round_().to(torch.uint8)

    def render(self, genomes: torch.Tensor) -> torch.Tensor:
        return genomes

    # --- gradient refinement (``--refine grad``): the pixels are the weights --------------
    # Pixels in [0, 1] shifted by -1/2, so the refine emitter's symmetric clamp keeps them
    # in range.
    weight_bound = 0.5
    # Adam's first steps move each pixel by about lr: 0.01 is 2.55 grey levels, so a child's
    # 4 steps survive quantisation (cppn's 3e-4 would round back to the parent). Measured
    # (EfficientNet-Lite0, --refine-share 0.6, seed 0, 9,940 evaluations, Intel Xeon): lr
    # 0.003 median 9.97 % / 62 classes >= 99 %, 0.01 16.99 % / 113, 0.03 15.81 % / 147.
    refine_lr = 0.01

    @classmethod
    def default_refine_lr(cls, params: dict) -> float:
        """Adam's default step for ``--refine grad`` (the same for any parameters)."""
        return cls.refine_lr

    def weights_of(self, genomes: torch.Tensor) -> np.ndarray:
        """Every pixel of ``genomes`` as ``x / 255 - 1/2``, genome by genome (float32)."""
        return self.to_vectors(genomes).div_(255.0).sub_(0.5).reshape(-1).cpu().numpy()

    def weight_counts(self, genomes: torch.Tensor) -> np.ndarray:
        """How many of ``weights_of``'s values each genome has: its pixels."""
        return np.full(len(genomes), math.prod(self.image_shape), dtype=np.int64)

    def render_differentiable(self, genomes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights`` (laid out as ``weights_of``) as ``B×C×H×W`` images in [0, 1]."""
        return (weights + 0.5).view(len(genomes), *self.image_shape)

    def with_weights(self, parents: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
        """The 8-bit images of ``weights`` (laid out as ``weights_of``)."""
        pixels = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=self.device)
        return self.from_vectors(pixels.add(0.5).mul_(255.0)).view(len(parents), *self.image_shape)

    def to_vectors(self, genomes: torch.Tensor) -> torch.Tensor:
        return genomes.to(torch.float32)  # in 0-255 pixel units

    def from_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.clamp(0.0, 255.0).round_().to(torch.uint8)

    def concat(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, second.to(first.device)])

    def take(self, genomes: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        # a memcpy a row (take_rows): torch's advanced indexing and index_select move uint8 rows slowly
        return take_rows(genomes, index)

    def rows(self, genomes: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return genomes[start:stop]  # a view: batches are never written after they are made

    def empty_store(self, size: int) -> torch.Tensor:
        return torch.zeros((size, *self.image_shape), dtype=torch.uint8, device=self.device)

    def put(self, store: torch.Tensor, slots: np.ndarray, genomes: torch.Tensor,
            index: np.ndarray) -> torch.Tensor:
        if len(slots):
            copy_rows_(store, np.asarray(slots, dtype=np.int64), self.take(genomes, index))
        return store

    def pack(self, store: torch.Tensor, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {"pixels": store[torch.as_tensor(slots, dtype=torch.long, device=store.device)].cpu().numpy()}

    def unpack(self, arrays: dict[str, np.ndarray], slots: np.ndarray, size: int) -> torch.Tensor:
        pixels = np.asarray(arrays["pixels"])
        if pixels.dtype != np.uint8 or pixels.shape != (len(slots), *self.image_shape):
            raise ValueError(f"direct genomes have shape {pixels.shape} {pixels.dtype}, expected "
                             f"{(len(slots), *self.image_shape)} uint8")
        store = self.empty_store(size)
        if len(slots):
            store[torch.as_tensor(slots, dtype=torch.long, device=self.device)] = \
                torch.from_numpy(pixels).to(self.device)
        return store
