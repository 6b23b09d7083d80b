"""Helpers for tests that compare CPPN genomes."""

from __future__ import annotations

import numpy as np


def same_graph(a, b) -> bool:
    """Same nodes, activations and links (weights aside)."""
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("node_id", "node_act", "link_id", "link_src", "link_dst"))
