"""The hf backend's recorded entropies and log-probs against an independent full forward pass."""

import numpy as np
import pytest
import torch

from stepprune.backends import SamplingSpec
from stepprune.backends.entropy import entropy_reference


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


# A checkpoint whose generation_config.json asks for sampling transforms the backend must ignore:
# transformers 5 fills every GenerationConfig field left None from this file.
CHECKPOINT_DEFAULTS = dict(
    do_sample=True,
    temperature=0.3,
    top_p=0.5,
    top_k=3,
    min_p=0.2,
    repetition_penalty=1.5,
    no_repeat_ngram_size=2,
)


@pytest.fixture(scope="module")
def defaults_model_dir(tmp_path_factory):
    import json

    from conftest import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny-with-gen-defaults"))
    gen = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**gen, **CHECKPOINT_DEFAULTS}))
    return path


def _reference_sample(model, prompt, spec, stop_ids):
    """A hand-written sampler: uncached forward, raw logits / T, nucleus, one multinomial draw
    per step from the global generator seeded as the backend seeds it (transformers draws
    ``torch.multinomial(softmax(scores), 1)`` on a [batch, vocab] tensor at every step)."""
    torch.manual_seed(spec.seed)
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(spec.max_new_tokens):
            logits = model(torch.tensor([ids])).logits[:, -1].float()
            if spec.greedy:
                token = int(logits.argmax(-1))
            else:
                scores = logits / spec.temperature
                p, order = scores.softmax(-1).sort(descending=True)
                # keep a token while the mass ranked strictly above it is below top_p
                keep = torch.zeros_like(p, dtype=torch.bool).scatter(
                    1, order, p.cumsum(-1) - p < spec.top_p
                )
                token = int(torch.multinomial(scores.masked_fill(~keep, -torch.inf).softmax(-1), 1))
            out.append(token)
            ids.append(token)
            if token in stop_ids:
                break
    return out


@pytest.mark.parametrize("greedy", [True, False])
def test_checkpoint_generation_defaults_change_neither_samples_nor_entropies(
    defaults_model_dir, greedy
):
    from stepprune.backends.hf import HFBackend
    from stepprune.backends.rescore import Rescorer

    backend = HFBackend(str(defaults_model_dir), dtype="float32")
    rescorer = Rescorer(str(defaults_model_dir), dtype="float32")
    spec = SamplingSpec(max_new_tokens=24, greedy=greedy, temperature=0.8, top_p=0.9, seed=5)
    for text in ("Tom has 3 apples", "First, compute"):
        prompt = backend.tokenizer(text)["input_ids"]
        out = backend.generate([prompt], spec)[0]
        assert out.token_ids == _reference_sample(backend.model, prompt, spec, backend.stop_ids)
        (ent, lp) = rescorer.score([(prompt, out.token_ids)])[0]  # the score stage's path
        np.testing.assert_allclose(out.entropies, ent, atol=1e-4)
        np.testing.assert_allclose(out.logprobs, lp, atol=1e-4)
        assert np.std(ent) > 0.01


def test_entropy_is_of_raw_logits_when_sampling_kwargs_add_a_penalty(backend):
    """Like vLLM's raw log-probs: a penalty reshapes what is sampled, never what is measured."""
    from stepprune.backends.rescore import teacher_forced

    prompt = backend.tokenizer("Then divide by 4")["input_ids"]
    plain = SamplingSpec(max_new_tokens=24, greedy=True)
    penalised = SamplingSpec(max_new_tokens=24, greedy=True, extra={"repetition_penalty": 2.0})
    raw = backend.generate([prompt], plain)[0]
    out = backend.generate([prompt], penalised)[0]
    assert out.token_ids != raw.token_ids  # the penalty did change the sample
    ent, lp = teacher_forced(backend.model, prompt, out.token_ids)
    np.testing.assert_allclose(out.entropies, ent, atol=1e-4)
    np.testing.assert_allclose(out.logprobs, lp, atol=1e-4)


def test_sampling_record_names_the_forced_and_the_ignored_settings(defaults_model_dir, tmp_path):
    import json

    from conftest import tiny_generate

    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    gen = tiny_generate(defaults_model_dir, tmp_path, 1, max_new_tokens=4)
    record = json.loads(read_table(gen, GENERATIONS).column("sampling")[0].as_py())
    assert record["hf_generation"]["top_k"] == 0
    assert record["hf_generation"]["repetition_penalty"] == 1.0
    ignored = record["hf_ignored_model_defaults"]
    assert {k: ignored[k] for k in CHECKPOINT_DEFAULTS} == CHECKPOINT_DEFAULTS
