"""Entropy: the exact path against float64 references, and the top-k bounds bracketing truth."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stepprune.backends.entropy import entropy_reference, logits_entropy, topk_entropy_bounds
from stepprune.cot.entropy import step_entropy


def test_uniform_and_one_hot():
    _, h = logits_entropy(torch.zeros(2, 1000))
    assert np.allclose(h.numpy(), np.log(1000), atol=1e-5)
    logits = torch.full((1, 50), -1e4)
    logits[0, 3] = 0
    assert logits_entropy(logits)[1].item() == 0.0


def test_masked_logits_do_not_make_nan():
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]])
    assert abs(logits_entropy(logits)[1].item() - np.log(2)) < 1e-6


def test_bf16_logits_are_computed_in_float32():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50000, generator=g) * 5
    ref = entropy_reference(x.to(torch.bfloat16).float().numpy())
    _, h = logits_entropy(x.to(torch.bfloat16))
    assert h.dtype == torch.float32
    assert np.abs(h.numpy() - ref).max() < 1e-4


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.float64, st.integers(30, 300), elements=st.floats(-30, 30)),
    st.integers(1, 20),
)
def test_topk_bounds_bracket_exact(logits, k):
    k = min(k, logits.size)
    exact = entropy_reference(logits[None])[0]
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    top = np.sort(logp)[::-1][:k]
    lower, upper, tail = topk_entropy_bounds(top[None], vocab_size=logits.size)
    assert lower[0] <= exact + 1e-6
    assert exact <= upper[0] + 1e-6
    assert abs(tail[0] - (1 - np.exp(top).sum())) < 1e-9


def test_topk_bounds_literal():
    # p = (0.5, 0.25) known, tail 0.25 over 2 tokens of a 4-token vocab.
    lower, upper, tail = topk_entropy_bounds(np.log([[0.5, 0.25]]), vocab_size=4)
    head = -(0.5 * np.log(0.5) + 0.25 * np.log(0.25))
    assert np.isclose(tail[0], 0.25)
    assert np.isclose(lower[0], head - 0.25 * np.log(0.25))  # one token of 0.25 (<= p_min)
    assert np.isclose(upper[0], head - 2 * 0.125 * np.log(0.125))  # two tokens of 0.125


def test_step_entropy_sum_and_mean():
    h = np.array([1.0, 2.0, 3.0, 4.0])
    assert step_entropy(h, (1, 3)) == 5.0
    assert step_entropy(h, (1, 3), "mean") == 2.5
    assert step_entropy(h, (2, 2), "mean") == 0.0
