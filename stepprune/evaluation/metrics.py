"""Evaluation metrics: bootstrap confidence intervals, L-Acc and unbiased Pass@k.

Pure numpy, no model code, so every figure in an eval report can be recomputed by hand.
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(
    values, *, level: float = 0.95, n_boot: int = 1000, seed: int = 0, groups=None
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values``.

    With ``groups`` (e.g. problem ids when a problem has several samples), whole groups are
    resampled, since samples of one problem are not independent, and each draw's statistic is
    the pooled mean of its values (sum over the drawn groups / their count): the interval of
    ``mean(values)``. For a mean of per-group means, pass those means without ``groups``.
    An empty input gives NaNs.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, x.size, size=(n_boot, x.size))
        means = x[idx].mean(axis=1)
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        sums = np.bincount(inverse, weights=x)
        counts = np.bincount(inverse).astype(np.float64)
        pick = rng.integers(0, sums.size, size=(n_boot, sums.size))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def l_acc(acc: float, length: float, base_length: float) -> float:
    """L-Acc = Acc * sqrt(1 - L / L_base) (arXiv 2511.14258), with L / L_base clipped to [0, 1].

    A run at least as long as its baseline scores 0; a run of length 0 scores its accuracy.
    """
    if base_length <= 0 or math.isnan(base_length) or math.isnan(length):
        return math.nan
    ratio = min(max(length / base_length, 0.0), 1.0)
    return acc * math.sqrt(1.0 - ratio)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k for one problem with n samples of which c are correct:
    1 - C(n - c, k) / C(n, k) (Chen et al. 2021). Needs k <= n."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(problem_ids, correct, k: int) -> float:
    """Pass@k averaged over problems; every problem must have at least k samples."""
    _, inverse = np.unique(np.asarray(problem_ids), return_inverse=True)
    n = np.bincount(inverse)
    c = np.bincount(inverse, weights=np.asarray(correct, dtype=np.float64)).astype(int)
    scores = [pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c, strict=True)]
    return float(np.mean(scores)) if scores else math.nan
