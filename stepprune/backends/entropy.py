"""Token entropy: exact full-vocabulary entropy from logits, and top-k estimates with bounds.

Exact: H = -sum_v p(v) log p(v), computed in float32 from the model's raw logits (before
temperature, top-p or any other sampling transform) with a log-softmax, so p log p never
underflows into NaN. Top-k (vLLM): from the k largest raw log-probabilities we know the head
of the distribution and the tail mass m = 1 - sum(top-k p). The tail's contribution to H is
at least what it is when the tail is packed into as few tokens as the top-k order allows (each
tail token has p <= the k-th probability), and at most when m is spread evenly over the other
V - k tokens. The stored estimate is the lower bound: real next-token tails decay fast, so most
of their mass sits just under the k-th token.
"""

from __future__ import annotations

import numpy as np
import torch


def logits_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies) over the last dim, both float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    # exp(-inf) * -inf is nan; masked (-inf) logits contribute exactly 0 to the entropy.
    plogp = torch.where(torch.isfinite(logp), logp.exp() * logp, torch.zeros_like(logp))
    return logp, -plogp.sum(dim=-1)


def entropy_reference(logits: np.ndarray) -> np.ndarray:
    """Float64 numpy entropy, for tests and benchmarks to check the torch path against."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(x).sum(axis=-1, keepdims=True))
    logp = x - logz
    return -(np.exp(logp) * logp).sum(axis=-1)


def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def topk_entropy_bounds(
    topk_logprobs: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounds on H from each row's top-k log-probs (k = row width; -inf pads short rows).

    Returns (lower, upper, tail_mass). ``lower`` is also the stored estimate (module docstring).
    """
    lp = np.asarray(topk_logprobs, dtype=np.float64)
    p = np.exp(lp)
    head = -_xlogx(p).sum(axis=-1)
    k = np.isfinite(lp).sum(axis=-1)
    tail = np.clip(1.0 - p.sum(axis=-1), 0.0, 1.0)
    p_min = np.where(np.isfinite(lp), p, np.inf).min(axis=-1)
    p_min = np.where(np.isfinite(p_min) & (p_min > 0), p_min, 1.0)
    n_full = np.floor(tail / p_min)
    remainder = np.clip(tail - n_full * p_min, 0.0, None)
    lower = head - n_full * _xlogx(p_min) - _xlogx(remainder)
    rest = np.maximum(vocab_size - k, 1)
    upper = head - _xlogx(tail) + tail * np.log(rest)
    return lower, np.maximum(upper, lower), tail
