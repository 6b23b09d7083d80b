"""Step recombination, now in ``evofool.emitters`` (this module re-exports it for its importers)."""

from evofool.emitters._step_recombination import (DEFAULT_SCALES, StepRecombination, StepRecombinationEmitter,
                                                  parse_scales)

__all__ = ["DEFAULT_SCALES", "StepRecombination", "StepRecombinationEmitter", "parse_scales"]
