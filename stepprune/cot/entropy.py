"""Step entropy: a step's token entropies summed (the paper's score) or averaged, over its token
span. The token entropies themselves come from the backends (``stepprune.backends.entropy``)."""

from __future__ import annotations

import numpy as np


def step_entropy(token_entropies, span: tuple[int, int], reduce: str = "sum") -> float:
    t0, t1 = span
    total = float(np.sum(token_entropies[t0:t1], dtype=np.float64))
    if reduce == "sum":
        return total
    if reduce == "mean":
        return total / (t1 - t0) if t1 > t0 else 0.0
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
