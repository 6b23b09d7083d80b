"""Datasets evofool reads from disk (never downloaded, never copied into the repo)."""

from evofool.data.idx import load_idx_dataset, read_idx

__all__ = ["load_idx_dataset", "read_idx"]
