"""Emitters: the pieces that propose each generation's genomes (pyribs / QDax style).

The engine (``evofool.engine.Engine``, the scheduler) joins one ``ClassArchive`` and a
list of emitters. Each generation it asks every emitter for its share of the population,
concatenates the answers in list order, renders and scores the whole batch in one forward
pass, updates the archive, and tells every emitter its own rows::

    MutationEmitter(encoding, LaggingSelector())                 # champions, mutated
    StepRecombinationEmitter(encoding, mutation, population)     # their averaged best steps
    WeightStepEmitter(encoding, size)                            # per-cell (1+1)-ES on weights
    ExtrapolationEmitter(encoding, mutation, population)         # winning weight steps, continued
    GradientRefineEmitter(encoding, size, objective)             # gradient steps on weights (not black-box)

``Emitter`` is the base to subclass for new ones (pass them as ``Engine(..., emitters=[...])``).
"""

from evofool.emitters._emitter import Emitter, ProposalEmitter
from evofool.emitters._extrapolation import (DEFAULT_LENGTHS, ExtrapolationEmitter, extrapolation_places,
                                             parse_lengths)
from evofool.emitters._gradient_refine import (EVALUATIONS_PER_GRADIENT_STEP, FIRST_REFINE_LR, REFINE_STEPS,
                                               GradientRefineEmitter)
from evofool.emitters._mutation import Lineage, MutationEmitter
from evofool.emitters._selector import (CURIOSITY_DECAY, LAGGING_UNIFORM_SHARE, SELECTIONS, SELECTORS,
                                        CuriositySelector, LaggingSelector, Selector, UniformSelector,
                                        make_selector)
from evofool.emitters._step_recombination import (DEFAULT_SCALES, StepRecombination, StepRecombinationEmitter,
                                                  parse_scales)
from evofool.emitters._weight_step import WEIGHT_STEP_SIGMA0, WeightStepEmitter

__all__ = ["CURIOSITY_DECAY", "CuriositySelector", "DEFAULT_LENGTHS", "DEFAULT_SCALES",
           "EVALUATIONS_PER_GRADIENT_STEP", "Emitter", "ExtrapolationEmitter", "GradientRefineEmitter",
           "LAGGING_UNIFORM_SHARE", "LaggingSelector", "Lineage", "MutationEmitter", "ProposalEmitter", "REFINE_STEPS", "SELECTIONS",
           "SELECTORS", "Selector", "StepRecombination", "StepRecombinationEmitter", "UniformSelector",
           "WEIGHT_STEP_SIGMA0", "WeightStepEmitter", "extrapolation_places", "make_selector", "parse_lengths", "parse_scales"]
