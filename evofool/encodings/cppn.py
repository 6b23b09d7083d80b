"""The ``cppn`` encoding: images drawn by evolving CPPNs (Nguyen et al. 2015).

Genomes are immutable :class:`~evofool.encodings.cppn_genome.Genome` objects; a batch
and a store are Python lists (``None`` marks an empty store slot), so ``take``/``put``
only move references. Images are rendered for a whole batch at once (see
:mod:`evofool.encodings.cppn_render`). Defaults follow the original paper's code, except
the polynomial mutation's eta (40 instead of 15, see below).
"""

from __future__ import annotations

import numpy as np
import torch

from evofool.values import Param
from evofool.encodings.base import Encoding, inert_when
from evofool.encodings.cppn_genome import (
    ACTIVATIONS,
    CROSSOVERS,
    Counters,
    Genome,
    MutationRates,
    check_genome,
    compute_layers,
    cross_batch,
    densify_outputs,
    into_outputs,
    mutate_batch,
    random_genome,
    step_weights,
    with_weights,
)
from evofool.encodings.cppn_render import (DEFAULT_CHUNK_ELEMENTS, render_batch, render_differentiable,
                                           render_one_reference)

__all__ = ["CPPNEncoding", "Genome", "render_one_reference"]

REFINE_LINKS = ("output", "all", "dense")  # --param refine_links: which link weights --refine grad moves


def _probability(default: float, what: str) -> Param:
    """A parameter that is a probability, in [0, 1]."""
    return Param(float, default, low=0.0, high=1.0, help=what)


class CPPNEncoding(Encoding):
    """CPPN genomes rendered to ``C×H×W`` images (C = 1 grayscale, 3 colour via HSV).

    Args:
        image_shape: ``(C, H, W)``; C must be 1 or 3.
        device: Where images are rendered.
        **params: Any of ``PARAMS`` (each one's default, range and meaning are declared
            there); the rest take their defaults.

    Raises:
        ConfigError: an unknown parameter, or a value of the wrong kind or out of range.
        ValueError: an image shape with neither 1 nor 3 channels.
    """

    name = "cppn"
    # Defaults: those of MutationRates (the original paper's code, but eta 40, not 15: with
    # 15, larger weight steps, seed 3 of the MNIST acceptance run stalled one class at
    # 99.96 % for 100+ generations; 40 reached 99.99 % on all 10 classes for seeds 0-4, at
    # generations 30, 29, 36, 108, 20. --param eta=15 restores the paper's).
    PARAMS = {
        "p_weight": _probability(MutationRates.p_weight, "per-weight probability of polynomial mutation"),
        "eta": Param(float, MutationRates.eta, low=0.0, low_open=True,
                     help="polynomial mutation distribution index (paper: 15)"),
        # At most 1e6: every hidden node's value is squashed into [-1, 1], so a node's sum stays far
        # inside float32 at any bound, but a bound near float64's limit overflowed the uniform draws.
        "weight_bound": Param(float, MutationRates.weight_bound, low=0.0, low_open=True, high=1e6,
                              help="weights live in [-weight_bound, weight_bound]"),
        "p_activation": _probability(MutationRates.p_activation,
                                     "per-node probability of redrawing the activation"),
        "p_add_link": _probability(MutationRates.p_add_link, "per-offspring probability of adding a link"),
        "p_remove_link": _probability(MutationRates.p_remove_link,
                                      "... of removing a link (refused if it disconnects an output)"),
        "p_add_node": _probability(MutationRates.p_add_node, "... of splitting a link with a new hidden node"),
        "p_remove_node": _probability(MutationRates.p_remove_node,
                                      "... of deleting a hidden node (refused if it disconnects an output)"),
        "p_weights_only": _probability(MutationRates.p_weights_only,
                                       "per-offspring probability that only link weights change (graph and "
                                       "activations kept)"),
        "weights_only_above": Param(float, MutationRates.weights_only_above, low=0.0, high=1.0,
                                    inert=inert_when(("p_weights_only", 0)),
                                    help="p_weights_only only for children of parents at least this confident "
                                         "of their class (0: every child)"),
        # Sparser, finer steps for the weights-only children. Measured on the 200k-evaluation
        # archive of curiosity-bold-fine80-30 seed 1 (EfficientNet-Lite0, AMD EPYC Zen 4; 800
        # children of the same champions below 99 %, ~31 links each, mean of 2 draws;
        # benchmarks/weights_only_probe.py): weights-only at p_weight 0.1, eta 40 (the run's)
        # beat a cell 8.0 % of the time, 64 cells improved, summed log-prob gain 6.35; 0.05 / 40:
        # 14.4 %, 110, 8.20; 0.02 / 40: 11.8 %, 90, 5.91; 0.02 / 100: 17.2 %, 126, 6.74; 0.02 / 200:
        # 21.9 %, 158, 6.08; the run's own mutation 3.9 %, 30, 1.92; structural only 1.2 %, 10, 0.99.
        # As whole runs (fine80-30 with 0.02 / 100, seeds 0 and 1, 200k evaluations) it ended level
        # with fine80-30's own: median 67.83 / 71.48 % against 74.57 / 66.31 %. Off by default.
        "weights_only_p_weight": Param(float, MutationRates.weights_only_p_weight, low=0.0, high=1.0,
                                       inert=inert_when(("p_weights_only", 0), ("weights_only_output", 1)),
                                       help="per-weight probability of mutation for the weights-only children, "
                                            "at least one weight each (0: p_weight)"),
        "weights_only_eta": Param(float, MutationRates.weights_only_eta, low=0.0,
                                  inert=inert_when(("p_weights_only", 0), ("weights_only_output", 1)),
                                  help="polynomial mutation eta for the weights-only children (0: eta)"),
        # The links into the output nodes are the smooth part of a CPPN (the image is a squashed
        # weighted sum of its hidden planes there; see refine_links). Measured on the 200k-evaluation
        # archive of curiosity-bold-fine80-30-waves seed 0 (EfficientNet-Lite0, Intel Xeon; 300
        # children of champions at 30-99 %, two draws): Gaussian steps on every output link at sigma
        # 0.01 / 0.02 / 0.05 / 0.1 beat their parent 30-35 / 23-27 / 9-14 / 5-7 % of the time, summed
        # log-prob gain 1.5-2.1 / 2.0-2.4 / 1.1-2.0 / 0.6-1.0, against the run's weights-only
        # polynomial children's 2-3 % and 0.26-0.42; at 2-30 %: 0.02 gained 11 against 4.1 (all
        # links, polynomial) and 0.005-0.47 (the structural children those champions get).
        # As whole runs (curiosity-bold-fine80-30, seed 0, Intel Xeon), given to every weights-only
        # child (1) it lost: median 19.43 % at 50k evaluations and 26.89 % at 75k against 27.03 % at
        # 50k with polynomial steps (from 10 % confidence: 19.02 and 27.80 %). A child that only
        # re-weighs its parent's planes climbs its own class, but brings none of the new planes
        # that later children build on. A quarter (0.25) ended level: 75.05 / 68.94 % and 56 / 48
        # classes >= 99 % at 200k (seeds 0 / 1) against 73.86 / 66.31 % and 58 / 51. Off by default (0).
        "weights_only_output": Param(float, MutationRates.weights_only_output, low=0.0, high=1.0,
                                     inert=inert_when(("p_weights_only", 0)),
                                     help="share of the weights-only children that step every link into an "
                                          "output node (Gaussian, weights_only_sigma) and no other weight; the "
                                          "rest take polynomial steps (0: none)"),
        "weights_only_sigma": Param(float, MutationRates.weights_only_sigma, low=0.0, low_open=True,
                                    inert=inert_when(("p_weights_only", 0), ("weights_only_output", 0)),
                                    help="standard deviation of the output-link steps"),
        # The direct encoding's pattern mutations as a CPPN operator: a new sine node fed by x, y
        # and the bias (a grating) or by d and the bias (rings), added into one output at a
        # small weight, so a child keeps its parent's image with one whole-image pattern added
        # (a node split by add_node changes what flows along an existing path instead). Measured
        # (EfficientNet-Lite0, curiosity-bold-fine80-30 + 0.5, Intel Xeon, 200k evaluations):
        # median 69.97 / 71.27 % (seeds 0 / 1) against 74.57 / 66.31 % without: level. Off.
        "p_add_wave": _probability(MutationRates.p_add_wave, "per-offspring probability of adding a grating or "
                                                             "rings node into an output (0: off, as in the paper)"),
        "wave_weight": Param(float, MutationRates.wave_weight, low=0.0, low_open=True,
                             inert=inert_when(("p_add_wave", 0)),
                             help="the added pattern's weight into its output is uniform in ±this"),
        # float32 by default: measured (benchmarks/imagenet.py, EfficientNet-Lite0, pop 100, Intel
        # Xeon 2 cores) engine 125-141 -> 154 evals/s, render thread time 61 % -> 42 %; 1.8-1.9x faster
        # rendering at 224x224. The images are float32's: against float64, ~1e-4 of the pixels of
        # deep genomes differ (where a badly conditioned sin amplifies rounding; up to 217 grey
        # levels there), 5e-5 of shallow ones (at most 5 levels). Runs recorded before this
        # default (no render_dtype in their encoding_params) rendered in float64 and still do.
        "render_dtype": Param(str, "float32", choices=("float64", "float32"), legacy="float64",
                              help="rendering arithmetic: float32 faster, float64 closer to exact "
                                   "(rare pixels of deep genomes differ)"),
        # --refine grad on every link, or only on the links into the output nodes (the last
        # weighted sum before each colour channel). Measured on 60 champions of a 10k-evaluation
        # ImageNet run (curiosity-bold, seed 0; EfficientNet-Lite0, Intel Xeon, 4 Adam steps):
        # every link at its best lr (1e-4) improved 73 % of them, median +0.031 log-probability;
        # output links at lr 0.01 improved all 60, median +0.18 (the image is a smooth function of
        # those weights, a rugged one of the weights inside sin and Gaussian nodes).
        # dense: the child first gets a link at weight 0 from every input and hidden node into
        # every output node it lacks (the image is unchanged), then steps the output links:
        # a linear read-out of all the CPPN's node values. Measured on 40 champions below 99 %
        # of a 10k-evaluation run (curiosity-bold, seed 0; AMD EPYC Zen 4): median 9 output
        # links -> 30; 4 steps at lr 0.01 gained a mean 0.36 log-probability (output: 0.18),
        # 0.028 per evaluation (0.014); 1 step 0.031 (0.019).
        "refine_links": Param(str, "output", choices=REFINE_LINKS, legacy="all",
                              help="--refine grad steps every link weight, those into the output nodes, or "
                                   "(dense) those after linking every node into every output"),
        # Crossover between champions of the batch, before mutation (cppn_genome.cross_batch):
        # off by default, as in the paper, whose runs had none. Measured (EfficientNet-Lite0,
        # curiosity-bold, AMD EPYC Zen 4, seeds 0 and 1 to 200k evaluations), rate 0.3 uniform:
        # median 60.76 / 57.82 % against 59.87 / 55.36 % without, classes >= 99 % 33 / 28
        # against 42 / 34; line was behind at 20k (7.59 % against 10.98 %, seed 0).
        "crossover_rate": _probability(0.0, "share of offspring whose parent is first crossed with "
                                            "another parent of the batch (0: off)"),
        "crossover": Param(str, "uniform", choices=CROSSOVERS, inert=inert_when(("crossover_rate", 0)),
                           help="uniform: each shared gene from either parent (NEAT); line: shared "
                                "weights moved along the line to the mate's"),
        "crossover_sigma": Param(float, 1.0, low=0.0, low_open=True,
                                 inert=inert_when(("crossover_rate", 0), ("crossover", "uniform")),
                                 help="spread of the line crossover's step (in mate distances)"),
        "render_chunk_elements": Param(int, DEFAULT_CHUNK_ELEMENTS, low=1,
                                       help="GPU memory knob: node values one rendering pass may hold"),
    }
    # --refine grad: Adam's default step on a link weight (weights live in [-10, 10]). The
    # first refine runs used 0.1, measured on *random* 7-9-node CPPNs (EfficientNet-Lite0,
    # 40 steps, their top class as target: 0.52 -> 0.86 within 4 steps). Evolved champions
    # are far more rugged: on the 1,000 champions of a 20k-evaluation ImageNet run, a weight
    # step of norm 1e-4 along the gradient already gained 5x less log-probability than the
    # gradient predicted, and 4 steps at lr 0.1 *lost* confidence in every band (mean -0.16
    # for champions at 50-99 %); lr 1e-2 and 2e-3 were about neutral, 3e-4 gained a little
    # everywhere (median x1.02-1.14 per child; AMD EPYC Zen 1, 12 champions per band, /tmp
    # probe of 2026-12-05).
    # With refine_links=output (the default), 0.01: of 1e-3 .. 0.3 on the 60 champions above,
    # 0.01 improved all (median +0.18), 0.03 83 % (+0.28), 0.1 half (+0.002).
    REFINE_LRS = {"all": 3e-4, "output": 0.01, "dense": 0.01}
    refine_lr = REFINE_LRS["output"]
    REFINE_ONLY_PARAMS = ("refine_links",)  # part of a run's meaning only with --refine grad
    PROBABILITIES = ("p_weight", "p_activation", "p_add_link", "p_remove_link", "p_add_node", "p_remove_node",
                     "p_weights_only", "p_add_wave")

    def __init__(self, image_shape: tuple[int, int, int], device: torch.device | str = "cpu",
                 **params) -> None:
        super().__init__(image_shape, device)
        if self.image_shape[0] not in (1, 3):
            raise ValueError(f"cppn renders 1 (grayscale) or 3 (colour) channels, not {self.image_shape[0]}")
        p = self.check_params(params)
        self.rates = MutationRates(eta=float(p["eta"]), weight_bound=float(p["weight_bound"]),
                                   weights_only_above=float(p["weights_only_above"]),
                                   weights_only_p_weight=float(p["weights_only_p_weight"]),
                                   weights_only_eta=float(p["weights_only_eta"]),
                                   weights_only_output=float(p["weights_only_output"]),
                                   weights_only_sigma=float(p["weights_only_sigma"]),
                                   wave_weight=float(p["wave_weight"]),
                                   **{k: float(p[k]) for k in self.PROBABILITIES})
        self.uses_parent_confidence = self.rates.p_weights_only > 0 and self.rates.weights_only_above > 0
        self.render_dtype = p["render_dtype"]
        self.render_chunk_elements = int(p["render_chunk_elements"])
        self.refine_links = p["refine_links"]
        self.crossover_rate = float(p["crossover_rate"])
        self.crossover = p["crossover"]
        self.crossover_sigma = float(p["crossover_sigma"])
        self.refine_lr = self.REFINE_LRS[self.refine_links]
        self.counters = Counters()

    @property
    def n_out(self) -> int:
        return self.image_shape[0]

    # --- evolution -------------------------------------------------------------------
    def random(self, n: int, rng: np.random.Generator) -> list[Genome]:
        return [random_genome(self.n_out, rng, self.counters, self.rates.weight_bound) for _ in range(n)]

    def vary(self, parents: list[Genome], rng: np.random.Generator, generation: int) -> list[Genome]:
        return self.vary_scored(parents, None, rng, generation)

    def vary_scored(self, parents: list[Genome], confidences: np.ndarray | None, rng: np.random.Generator,
                    generation: int) -> list[Genome]:
        """``vary``; with ``weights_only_above`` the ``p_weights_only`` share goes only to
        children of parents at least that confident (``confidences``; None: to none)."""
        # With crossover off, no draw: the random stream of runs recorded before it is unchanged.
        parents = cross_batch(parents, self.crossover_rate, self.crossover, rng,
                              self.rates.weight_bound, self.crossover_sigma)  # a new list
        eligible = None
        if self.uses_parent_confidence:
            eligible = (np.zeros(len(parents), dtype=bool) if confidences is None
                        else np.asarray(confidences) >= self.rates.weights_only_above)
        return mutate_batch(parents, rng, self.counters, self.rates, eligible)

    def step_weights(self, parents: list[Genome], sigmas: np.ndarray, rng: np.random.Generator) -> list[Genome]:
        """Children with the parents' graphs and every weight moved by a Gaussian step of
        the parent's ``sigma`` (``evofool.encodings.cppn_genome.step_weights``)."""
        return step_weights(list(parents), sigmas, rng, self.counters, self.rates.weight_bound)

    @property
    def weight_bound(self) -> float:
        """Link weights live in ``[-weight_bound, weight_bound]``."""
        return self.rates.weight_bound

    def weights_of(self, genomes: list[Genome]) -> np.ndarray:
        """Every link weight of ``genomes``, concatenated genome by genome (float32)."""
        return np.concatenate([g.link_weight for g in genomes]) if genomes else np.zeros(0, np.float32)

    def weight_counts(self, genomes: list[Genome]) -> np.ndarray:
        """How many of ``weights_of``'s values each genome has: its links."""
        return np.array([len(g.link_weight) for g in genomes], dtype=np.int64)

    def same_graph(self, a: Genome, b: Genome) -> bool:
        """Whether ``a`` and ``b`` differ at most in their link weights (same nodes,
        activations and links, in the same order): ``weights_of`` lines them up."""
        return (np.array_equal(a.node_id, b.node_id) and np.array_equal(a.node_act, b.node_act)
                and np.array_equal(a.link_id, b.link_id))

    @classmethod
    def default_refine_lr(cls, params: dict) -> float:
        """Adam's default step for ``--refine grad`` with these encoding parameters."""
        return cls.REFINE_LRS[params.get("refine_links", cls.PARAMS["refine_links"].default)]

    def refine_graphs(self, genomes: list[Genome]) -> list[Genome]:
        """The graphs ``--refine grad`` steps: the genomes themselves, or with
        ``refine_links=dense`` each with a link at weight 0 from every input and hidden node
        into every output node it lacks (new innovation ids; the same image)."""
        if self.refine_links != "dense":
            return list(genomes)
        return [densify_outputs(g, self.counters) for g in genomes]

    def refine_mask(self, genomes: list[Genome]) -> np.ndarray | None:
        """Which of ``weights_of``'s values ``--refine grad`` moves: ``None`` for all of them,
        else a bool array (``refine_links=output`` or ``dense``: the links into the output nodes)."""
        if self.refine_links == "all":
            return None
        return into_outputs(genomes)

    def with_weights(self, parents: list[Genome], weights: np.ndarray) -> list[Genome]:
        """Children with the parents' graphs and these weights (as ``weights_of`` lays
        them out), clipped to the bound; new genome ids."""
        return with_weights(list(parents), weights, self.counters, self.rates.weight_bound)

    def render_differentiable(self, genomes: list[Genome], weights: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` float images in [0, 1] with ``weights`` (laid out as ``weights_of``)
        in place of the genomes' own, differentiable with respect to them
        (``evofool.encodings.cppn_render.render_differentiable``)."""
        return render_differentiable(list(genomes), weights, self.image_shape)

    def render_float(self, genomes: list[Genome]) -> torch.Tensor:
        """``B×C×H×W`` images in [0, 1] before quantisation, in the rendering dtype."""
        return render_batch(genomes, self.image_shape, self.device, getattr(torch, self.render_dtype),
                            quantise=False, max_elements=self.render_chunk_elements)

    def render(self, genomes: list[Genome]) -> torch.Tensor:
        """``B×C×H×W`` uint8 ``round(255 * p)`` (quantised tile by tile, while in cache)."""
        return render_batch(genomes, self.image_shape, self.device, getattr(torch, self.render_dtype),
                            quantise=True, max_elements=self.render_chunk_elements)

    # --- batches and the store ---------------------------------------------------------
    def take(self, genomes: list[Genome], index: np.ndarray) -> list[Genome]:
        return [genomes[int(i)] for i in np.asarray(index).reshape(-1)]

    def rows(self, genomes: list[Genome], start: int, stop: int) -> list[Genome]:
        return list(genomes[start:stop])

    def concat(self, first: list[Genome], second: list[Genome]) -> list[Genome]:
        return list(first) + list(second)

    def empty_store(self, size: int) -> list[Genome | None]:
        return [None] * int(size)

    def put(self, store: list, slots: np.ndarray, genomes: list[Genome], index: np.ndarray) -> list:
        for s, i in zip(np.asarray(slots).reshape(-1), np.asarray(index).reshape(-1)):
            store[int(s)] = genomes[int(i)]
        return store

    # --- saving ------------------------------------------------------------------------
    def pack(self, store: list, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Flat concatenated arrays plus offsets: genome k owns nodes
        ``node_offsets[k]:node_offsets[k+1]`` and links ``link_offsets[k]:link_offsets[k+1]``."""
        genomes = [store[int(s)] for s in np.asarray(slots).reshape(-1)]
        if any(g is None for g in genomes):
            raise ValueError("cannot pack an empty store slot")

        def cat(name: str, dtype) -> np.ndarray:
            parts = [getattr(g, name) for g in genomes]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        def offsets(sizes: list[int]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

        return {
            "genome_id": np.array([g.gid for g in genomes], dtype=np.int64),
            "parent_id": np.array([g.parent for g in genomes], dtype=np.int64),
            "node_offsets": offsets([g.n_nodes for g in genomes]),
            "node_id": cat("node_id", np.int64),
            "node_act": cat("node_act", np.int8),
            "link_offsets": offsets([g.n_links for g in genomes]),
            "link_id": cat("link_id", np.int64),
            "link_src": cat("link_src", np.int32),
            "link_dst": cat("link_dst", np.int32),
            "link_weight": cat("link_weight", np.float32),
        }

    def unpack(self, arrays: dict[str, np.ndarray], slots: np.ndarray, size: int) -> list:
        """Rebuilds genomes (layers recomputed, every invariant checked) into a new store."""
        slots = np.asarray(slots).reshape(-1)
        no, lo = np.asarray(arrays["node_offsets"]), np.asarray(arrays["link_offsets"])
        if no.size != slots.size + 1 or lo.size != slots.size + 1:
            raise ValueError("packed CPPN arrays do not match the number of slots")
        store = self.empty_store(size)
        for k, s in enumerate(slots):
            n0, n1, l0, l1 = int(no[k]), int(no[k + 1]), int(lo[k]), int(lo[k + 1])
            src = np.asarray(arrays["link_src"][l0:l1])
            dst = np.asarray(arrays["link_dst"][l0:l1])
            g = Genome(gid=int(arrays["genome_id"][k]), parent=int(arrays["parent_id"][k]),
                       n_out=self.n_out, node_id=arrays["node_id"][n0:n1], node_act=arrays["node_act"][n0:n1],
                       node_layer=compute_layers(n1 - n0, src.astype(np.int64), dst.astype(np.int64)),
                       link_id=arrays["link_id"][l0:l1], link_src=src, link_dst=dst,
                       link_weight=arrays["link_weight"][l0:l1])
            check_genome(g, self.rates.weight_bound)
            store[int(s)] = g
        return store

    # --- state and config ----------------------------------------------------------------
    def state_dict(self) -> dict:
        c = self.counters
        return {"next_genome_id": c.next_genome, "next_node_id": c.next_node, "next_link_id": c.next_link}

    def load_state_dict(self, state: dict) -> None:
        self.counters = Counters(next_genome=int(state["next_genome_id"]),
                                 next_node=int(state["next_node_id"]),
                                 next_link=int(state["next_link_id"]))

    def config(self) -> dict:
        r = self.rates
        return {
            "p_weight": r.p_weight, "eta": r.eta, "weight_bound": r.weight_bound,
            "p_activation": r.p_activation, "p_add_link": r.p_add_link,
            "p_remove_link": r.p_remove_link, "p_add_node": r.p_add_node,
            "p_remove_node": r.p_remove_node, "p_weights_only": r.p_weights_only,
            "weights_only_above": r.weights_only_above, "weights_only_p_weight": r.weights_only_p_weight,
            "weights_only_eta": r.weights_only_eta, "weights_only_output": r.weights_only_output,
            "weights_only_sigma": r.weights_only_sigma, "p_add_wave": r.p_add_wave, "wave_weight": r.wave_weight,
            "activations": list(ACTIVATIONS),
            "colour_space": "hsv" if self.n_out == 3 else "gray",
            "inputs": ["x", "y", "d", "bias"], "output_squash": "min(|out|, 1)",
            "render_dtype": self.render_dtype, "render_chunk_elements": self.render_chunk_elements,
            "refine_links": self.refine_links, "crossover_rate": self.crossover_rate,
            "crossover": self.crossover, "crossover_sigma": self.crossover_sigma,
        }
