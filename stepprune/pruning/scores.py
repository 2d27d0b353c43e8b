"""Step scores: what ranks steps for pruning. One value per step, lower = pruned first by ``low``.

- ``sum`` (default): the step's entropy, sum over its tokens of the full-vocabulary entropy
  H_t = -sum_v p(v) log p(v) (the step-entropy paper's definition);
- ``mean``: that sum divided by the step's token count;
- ``sampled``: the authors' public code, the mean over the step's tokens of -p log p of the
  *sampled* token only (p = exp(logprob)). It is one term of H_t's sum, so it is at most H_t;
  it is largest near p = 1/e and 0 both for certain tokens and for very unlikely samples;
- ``surprisal``: the sum over the step's tokens of -log p of the sampled token, the step's
  information content; its expectation under the model is the step entropy, so it is a
  one-sample Monte-Carlo estimate of ``sum``.

``sampled`` and ``surprisal`` read the rows' ``token_logprobs``; a step with no tokens scores 0.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SCORES = ("sum", "mean", "sampled", "surprisal")
LOGPROB_SCORES = ("sampled", "surprisal")


def token_terms(logprobs: np.ndarray, score: str) -> np.ndarray:
    """Per-token term of a log-prob score: -p log p (sampled) or -log p (surprisal)."""
    lp = logprobs.astype(np.float64)
    return -np.exp(lp) * lp if score == "sampled" else -lp


def logprob_scores(rows: pl.DataFrame, steps: pl.DataFrame, score: str) -> np.ndarray:
    """``score`` of every step of ``steps`` (ordered by _r, index) from its rows' token_logprobs.

    Each step's terms are summed on their own (``np.add.reduceat`` over step boundaries), so a
    step's score does not depend on where its row sits in the shard; a non-finite log-prob is
    an error naming the row.
    """
    lengths = rows["token_logprobs"].list.len().to_numpy()
    flat = rows["token_logprobs"].explode().drop_nulls().to_numpy().astype(np.float64)
    if not np.isfinite(flat).all():
        bad = int(
            np.searchsorted(np.cumsum(lengths), np.flatnonzero(~np.isfinite(flat))[0], "right")
        )
        raise ValueError(f"row {int(rows['_row'][bad])}: a token log-prob is not finite")
    terms = np.append(token_terms(flat, score), 0.0)  # a trailing 0 so every bound is an index
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    row_ids = rows["_r"].to_numpy()
    by_row = np.zeros(int(row_ids.max()) + 1 if row_ids.size else 0, dtype=np.int64)
    by_row[row_ids] = offsets
    base = by_row[steps["_r"].to_numpy()]
    start = base + steps["token_start"].to_numpy()
    end = base + steps["token_end"].to_numpy()
    if not start.size:
        return np.zeros(0)
    bounds = np.ravel(np.column_stack([start, end]))  # s0, e0, s1, e1, ... non-decreasing
    sums = np.add.reduceat(terms, bounds)[::2]
    total = np.where(end > start, sums, 0.0)  # reduceat gives terms[s] for an empty span
    if score == "sampled":
        return np.where(end > start, total / np.maximum(end - start, 1), 0.0)
    return total


def step_scores(rows: pl.DataFrame, steps: pl.DataFrame, score: str) -> pl.Series:
    """The ``_score`` column for ``steps`` (see the module docstring)."""
    if score == "sum":
        return steps["entropy_sum"].cast(pl.Float64).alias("_score")
    if score == "mean":
        return steps["entropy_mean"].cast(pl.Float64).alias("_score")
    if score in LOGPROB_SCORES:
        return pl.Series("_score", logprob_scores(rows, steps, score))
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")
