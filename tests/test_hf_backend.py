"""The hf backend's recorded entropies and log-probs against an independent full forward pass."""

import numpy as np
import pytest
import torch

from stepprune.backends import SamplingSpec
from stepprune.cot.entropy import entropy_reference


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from stepprune.backends.hf import HFBackend

    return HFBackend(str(tiny_model_dir), dtype="float32")


def _reference(model, prompt, gen):
    """Entropies and sampled log-probs from one unpadded, uncached forward over prompt+gen."""
    ids = torch.tensor([prompt + gen])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : len(prompt) + len(gen) - 1]
    x = logits.double().numpy()
    logz = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    return entropy_reference(x), x[np.arange(len(gen)), gen] - logz


@pytest.mark.parametrize("greedy", [True, False])
def test_entropies_match_full_logits(backend, greedy):
    tok = backend.tokenizer
    prompts = [
        tok("Tom has 3 apples")["input_ids"],
        tok("x")["input_ids"],
        tok("a b c d e f g")["input_ids"],
    ]
    spec = SamplingSpec(max_new_tokens=40, greedy=greedy, temperature=0.9, top_p=0.9, seed=3)
    outs = backend.generate(prompts, spec)
    assert len(outs) == 3
    for prompt, out in zip(prompts, outs, strict=True):
        assert len(out.token_ids) == len(out.entropies) == len(out.logprobs) > 0
        ref_h, ref_lp = _reference(backend.model, prompt, out.token_ids)
        assert np.abs(np.array(out.entropies) - ref_h).max() < 1e-4
        assert np.abs(np.array(out.logprobs) - ref_lp).max() < 1e-4
        assert np.std(ref_h) > 0.01  # the test compares values that vary
        assert out.entropy_source == "exact"
        assert out.finish_reason in ("stop", "length")
        if out.finish_reason == "stop":
            assert out.token_ids[-1] in backend.stop_ids
        else:
            assert len(out.token_ids) == 40


def test_greedy_picks_the_argmax(backend):
    prompt = backend.tokenizer("Then divide by 4")["input_ids"]
    out = backend.generate([prompt], SamplingSpec(max_new_tokens=10, greedy=True))[0]
    _, ref_lp = _reference(backend.model, prompt, out.token_ids)
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = backend.model(ids).logits[0, len(prompt) - 1 : -1]
    assert logits.argmax(-1).tolist() == out.token_ids


def test_seed_reproduces_samples(backend):
    prompt = backend.tokenizer("First, compute")["input_ids"]
    spec = SamplingSpec(max_new_tokens=20, temperature=1.0, top_p=1.0, seed=7)
    a = backend.generate([prompt, prompt], spec)
    b = backend.generate([prompt, prompt], spec)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert a[0].token_ids != a[1].token_ids  # two samples of one prompt differ


def test_teacher_forced_rescoring_matches_generation(backend):
    from stepprune.backends.rescore import teacher_forced

    prompt = backend.tokenizer("Tom has 3 apples")["input_ids"]
    out = backend.generate([prompt], SamplingSpec(max_new_tokens=30, temperature=1.0, seed=2))[0]
    for chunk in (7, 256):  # chunking must not change the result
        ent, lp = teacher_forced(backend.model, prompt, out.token_ids, chunk=chunk)
        assert np.abs(np.array(ent) - np.array(out.entropies)).max() < 1e-4
        assert np.abs(np.array(lp) - np.array(out.logprobs)).max() < 1e-4
