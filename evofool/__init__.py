"""evofool: evolve images that classifiers label with near certainty."""

import os

# Scores must not depend on how a batch is split or how many threads score it: a resumed
# run, a Ray worker scoring a sub-batch and `evofool transfer` re-scoring ten champions must
# all get the bits the run got. On AVX-512 CPUs MKL's default sgemm (torch's Linear layers)
# picks kernels by matrix size and thread count, which changes float32 results in the last
# bits; MKL's strict conditional-numerical-reproducibility mode on the AVX2 code path does
# not (measured: batch 10 vs 300 and 1 vs 2 threads bit-identical, no loss of speed for
# LeNet). MKL reads it at its first call, so this must run before any model is used; a
# value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

__version__ = "0.1.0"

__all__ = ["RunResult", "evolve", "load_run", "resume"]


def __getattr__(name: str):
    """``evofool.evolve`` / ``resume`` / ``load_run`` / ``RunResult``, imported on first use (keeps ``import evofool`` light)."""
    if name in __all__:
        from evofool import api

        return getattr(api, name)
    raise AttributeError(f"module 'evofool' has no attribute {name!r}")
