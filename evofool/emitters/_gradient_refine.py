"""``GradientRefineEmitter``: champions' weights moved uphill by gradients (not black-box).

Evolution only sees scores; this emitter also reads the model's gradients. For each chosen
cell it takes the champion as it is, renders it differentiably (``render_differentiable``:
a CPPN's graph with its link weights as variables, or a direct genome's pixels), and takes
a few Adam steps on those weights up the log-probability of the cell's class, through the
renderer and the torch model. The moved genome joins the batch like any offspring (one more evaluation) and takes
every cell it beats.

It is a hybrid, labelled as such wherever a run records it (``--refine grad``): each
forward + backward pass costs **3 evaluations** in the run's count (``extra_evaluations``),
so budgets compare fairly with black-box runs.

With ``adapt`` (``--refine-adapt on``), each cell keeps its own step: a factor on ``lr``
that follows the 1/5 success rule, as ``WeightStepEmitter``'s sigma does (a refined child
that beats its parent for the parent's class widens it, up to ``lr``; one that does not
narrows it, down to ``ADAPT_FLOOR`` × ``lr``). A champion near the top of its class needs
a finer step than a fresh one: on the 39 champions that the direct hybrid left between 63 %
and 99 % from 100k to 200k evaluations, 4 Adam steps at lr 0.01 improved none, at 0.003
all 39. Adam's moments do not depend on its learning rate, so a per-cell lr is Adam's own
step scaled row by row.

Exactness: the steps run on one torch thread on the CPU, so a run gives the same bits at
any ``--threads`` (a backward pass's reductions may be split by thread count otherwise).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from evofool.devices import torch_threads
from evofool.emitters._emitter import Emitter
from evofool.emitters._selector import LaggingSelector, Selector
from evofool.emitters._weight_step import WEIGHT_STEP_GAIN, one_fifth_rule
from evofool.encodings.base import Encoding, Genomes

# A forward + backward pass costs about three forward passes (the backward pass is about
# twice the forward): what the issue that asked for the hybrid fixed for every budget.
EVALUATIONS_PER_GRADIENT_STEP = 3
# Adam's default step is the encoding's (``refine_lr`` of its class: it suits its weights' scale).
FIRST_REFINE_LR = 0.1  # what runs recorded before --refine-lr existed stepped with
REFINE_STEPS = 4
# --refine-adapt: the 1/5 success rule of --weight-steps (the same speed and target), with the
# per-cell step between ADAPT_FLOOR x lr and lr. Measured on the direct hybrid's stalled
# champions (above): lr 0.003 and 0.001 improved all 39, so a tenth of 0.01 is still a
# step that survives 8-bit quantisation (4 steps of 0.001 = 1 grey level).
ADAPT_FLOOR = 0.1
# --refine-balance: the share of the batch moves by this factor each generation, towards the
# side (refined children or the rest of the batch) whose archive gain per evaluation is higher
# in an exponential average over about 1 / BALANCE_SMOOTHING generations; between BALANCE_LOW
# (at least one refined child, so its rate stays measured) and BALANCE_HIGH (the --refine-share
# range). Measured on 100 champions below 99 % of a black-box CPPN run at 50k evaluations
# (curiosity-bold, seed 0, EfficientNet-Lite0, Intel Xeon): one output-link step at lr 0.03
# gained 0.035 log-probability an evaluation, the run's own last 2,500 evaluations 0.016; at
# 10k evaluations the gradient was the worse side, so no fixed share suits a whole run.
BALANCE_GAIN = 1.1
BALANCE_SMOOTHING = 0.1
BALANCE_LOW = 0.01
BALANCE_HIGH = 0.9

Objective = Callable[[torch.Tensor], torch.Tensor]


class GradientRefineEmitter(Emitter):
    """Children whose weights took ``steps`` Adam steps up their parent's class log-probability.

    Args:
        encoding: An encoding with ``render_differentiable(genomes, weights)``,
            ``weights_of(genomes)``, ``with_weights(parents, weights)`` and ``weight_bound``
            (``cppn``: link weights; ``direct``: pixels); with ``adapt``, also
            ``weight_counts(genomes)`` (each genome's share of ``weights_of``); optionally
            ``refine_mask(genomes)`` (which weights move; ``None``: all; ``cppn``'s
            ``refine_links=output``: the links into its output nodes); optionally
            ``refine_graphs(genomes)`` (the graphs to step; ``cppn``'s ``refine_links=dense``
            links every node into every output first).
        size: Places this emitter takes in each batch.
        objective: Images ``B×C×H×W`` in [0, 1] (float, differentiable) -> per-class
            log-probabilities ``B×K`` (differentiable): the torch model, preprocessing
            included (``evofool.job`` builds it from the run's classifier).
        steps: Forward + backward passes per child.
        lr: Adam's learning rate on the weights; default: the encoding's ``refine_lr``.
        selector: Chooses the cells; default: ``LaggingSelector`` (cells not yet fooled).
        adapt: Keep a step per cell, adapted by the 1/5 success rule (``lr`` is then the
            largest step); False: every cell steps at ``lr``.
        balance: A population size: the emitter's places then follow its share of it, which
            starts at ``size / balance`` and moves each generation towards whichever side of
            the batch (its refined children, or the rest) gains the archive more per
            evaluation (``BALANCE_*``); None: always ``size`` places.
    """

    name = "gradient_refine"

    def __init__(self, encoding: Encoding, size: int, objective: Objective, steps: int = REFINE_STEPS,
                 lr: float | None = None, selector: Selector | None = None, adapt: bool = True,
                 balance: int | None = None) -> None:
        super().__init__(encoding)
        if not hasattr(encoding, "render_differentiable"):
            raise ValueError(f"the {encoding.name} encoding has no weights to refine by gradient (use cppn or direct)")
        if int(steps) < 1:
            raise ValueError("gradient refinement needs at least one step")
        self.size = int(size)
        self.objective = objective
        self.steps = int(steps)
        self.lr = float(encoding.refine_lr if lr is None else lr)
        self.selector = selector if selector is not None else LaggingSelector()
        self.adapt = bool(adapt)
        self.lr_scale: np.ndarray | None = None  # with adapt: K factors on lr, made at the first ask
        self._asked: tuple[np.ndarray, torch.Tensor] | None = None  # classes, their fitness then
        self.population = None if balance is None else int(balance)
        self.observes_gains = self.population is not None
        self.share = None if balance is None else min(max(self.size / self.population, BALANCE_LOW), BALANCE_HIGH)
        self.rates: list[float] | None = None  # with balance: average gain per evaluation, own and the rest's

    @property
    def batch_size(self) -> int:
        if self.population is None:
            return self.size
        return min(max(1, int(round(self.share * self.population))), self.population - 1)

    def observe(self, own: tuple[float, int], rest: tuple[float, int]) -> None:
        if self.population is None or self.extra_evaluations == 0 or own[1] == 0 or rest[1] == 0:
            return  # nothing refined this generation (the first is random): nothing to compare
        now = [own[0] / own[1], rest[0] / rest[1]]
        self.rates = now if self.rates is None else [
            (1 - BALANCE_SMOOTHING) * r + BALANCE_SMOOTHING * x for r, x in zip(self.rates, now)]
        factor = BALANCE_GAIN if self.rates[0] > self.rates[1] else 1 / BALANCE_GAIN
        self.share = min(max(self.share * factor, BALANCE_LOW), BALANCE_HIGH)

    def _scales(self, num_classes: int) -> np.ndarray:
        if self.lr_scale is None or len(self.lr_scale) != num_classes:
            self.lr_scale = np.ones(num_classes)
        return self.lr_scale

    def ask(self, archive, n: int, rng: np.random.Generator, generation: int) -> Genomes:
        self.extra_evaluations = 0
        self._asked = None
        if n == 0 or len(archive.occupied) == 0:
            # The first generation is the mutation emitter's random one; draw nothing more.
            return self.encoding.random(n, rng) if n else self.empty(archive)
        classes = self.selector.select(archive, n, rng)
        parents = archive.genomes_of(classes)
        parents = self.encoding.refine_graphs(parents)  # cppn's refine_links=dense adds read-out links
        scales = None
        if self.adapt:
            scales = self._scales(archive.num_classes)[classes]
            self._asked = (classes, archive.fitness[torch.from_numpy(classes).to(archive.device)].clone())
        weights = self.refine(parents, classes, scales)
        self.extra_evaluations = EVALUATIONS_PER_GRADIENT_STEP * self.steps * n
        return self.encoding.with_weights(parents, weights)

    def refine(self, parents: Genomes, classes: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        """The parents' weights (concatenated) after ``steps`` Adam steps, each genome up
        its class's log-probability (the images are independent, so one summed objective
        moves each genome by its own gradient); ``scales``: a factor on ``lr`` per genome."""
        start = torch.as_tensor(self.encoding.weights_of(parents), dtype=torch.float32)
        device = self.encoding.device
        weights = start.to(device).requires_grad_(True)
        target = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=device).unsqueeze(1)
        optimiser = torch.optim.Adam([weights], lr=self.lr)
        bound = self.encoding.weight_bound
        per_weight = None
        mask = self.encoding.refine_mask(parents)
        if mask is not None:  # weights outside the mask keep their values (Adam moves no zero-gradient weight)
            mask = torch.as_tensor(mask, dtype=torch.float32, device=device)
        if scales is not None:
            counts = torch.as_tensor(self.encoding.weight_counts(parents))
            per_weight = torch.repeat_interleave(torch.as_tensor(scales, dtype=torch.float32), counts).to(device)
        with torch.enable_grad(), torch_threads(1 if device.type == "cpu" else None):
            for _ in range(self.steps):
                images = self.encoding.render_differentiable(parents, weights)
                own = self.objective(images).gather(1, target.to(images.device)).sum()
                (grad,) = torch.autograd.grad(own, [weights])
                weights.grad = -grad if mask is None else -grad * mask  # Adam minimises
                before = None if per_weight is None else weights.detach().clone()
                optimiser.step()
                with torch.no_grad():
                    if before is not None:  # Adam's step at each genome's own lr (at full lr: Adam's bits)
                        weights.copy_(torch.where(per_weight == 1.0, weights, before + (weights - before) * per_weight))
                    weights.clamp_(-bound, bound)
        return weights.detach().cpu().numpy()

    def tell(self, archive, genomes: Genomes, images: torch.Tensor, fitness: torch.Tensor,
             rng: np.random.Generator) -> None:
        if self._asked is not None:  # with adapt
            self.lr_scale = one_fifth_rule(self._scales(archive.num_classes), self._asked, fitness, ADAPT_FLOOR, 1.0)
        self._asked = None

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        # JSON floats round-trip exactly (Python writes the shortest repr that reads back).
        state = {} if self.population is None else {"share": self.share, "rates": self.rates}
        return state, ({} if self.lr_scale is None else {"lr_scale": self.lr_scale.copy()})

    def load_state_dict(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.lr_scale = (np.asarray(arrays["lr_scale"], dtype=np.float64).copy()
                         if "lr_scale" in arrays else None)
        self._asked = None
        if self.population is not None:
            share, rates = float(state["share"]), state["rates"]
            if not BALANCE_LOW <= share <= BALANCE_HIGH:
                raise ValueError(f"refine share {share} outside [{BALANCE_LOW}, {BALANCE_HIGH}]")
            self.share = share
            self.rates = None if rates is None else [float(rates[0]), float(rates[1])]

    def config(self) -> dict:
        return {"type": self.name, "size": self.size, "steps": self.steps, "lr": self.lr,
                "evaluations_per_step": EVALUATIONS_PER_GRADIENT_STEP, "black_box": False,
                **({"adapt": {"rule": "one_fifth", "gain": WEIGHT_STEP_GAIN, "floor": ADAPT_FLOOR}}
                   if self.adapt else {}),
                **({"balance": {"population": self.population, "gain": BALANCE_GAIN, "smoothing": BALANCE_SMOOTHING,
                                "low": BALANCE_LOW, "high": BALANCE_HIGH}} if self.population is not None else {}),
                **self.selector.config()}
