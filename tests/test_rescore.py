"""Batched exact rescoring: equal to one sequence at a time, bounded head memory, the dtype kept."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_generate
from hypothesis import given, settings
from hypothesis import strategies as st

from stepprune.backends.rescore import Rescorer, plan_batches, teacher_forced_batch
from stepprune.schema import GENERATIONS
from stepprune.shards import read_table
from stepprune.stages.score import ScoreConfig, run


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _pairs(seed: int, n: int) -> list[tuple[list[int], list[int]]]:
    """Prompts of 1-9 tokens and completions of 0-40 tokens: very uneven in one batch."""
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(3, 300, rng.integers(1, 10)).tolist(), rng.integers(3, 300, c).tolist())
        for c in rng.integers(0, 41, n)
    ]


def _reference(model, prompt, completion):
    """Independent: full logits of the unpadded sequence, float64 log-softmax."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].double()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
    ent = -(logp.exp() * logp).sum(-1)
    return ent.numpy(), logp[torch.arange(len(completion)), torch.tensor(completion)].numpy()


def test_batched_equals_one_at_a_time_and_an_independent_forward(model):
    pairs = _pairs(0, 9)
    batched = teacher_forced_batch(model, pairs, chunk=7)
    for (prompt, completion), (ent, lp) in zip(pairs, batched, strict=True):
        single_ent, single_lp = teacher_forced_batch(model, [(prompt, completion)], chunk=256)[0]
        assert len(ent) == len(completion)
        np.testing.assert_allclose(ent, single_ent, atol=1e-5)
        np.testing.assert_allclose(lp, single_lp, atol=1e-5)
        if completion:
            ref_ent, ref_lp = _reference(model, prompt, completion)
            np.testing.assert_allclose(ent, ref_ent, atol=1e-4)
            np.testing.assert_allclose(lp, ref_lp, atol=1e-4)


def test_rescorer_keeps_input_order_across_its_batch_plan(tiny_model_dir, model):
    pairs = _pairs(1, 12)
    rescorer = Rescorer(str(tiny_model_dir), dtype="float32", token_budget=60, chunk=16)
    got = rescorer.score(pairs)
    for (prompt, completion), (ent, _) in zip(pairs, got, strict=True):
        if completion:
            np.testing.assert_allclose(ent, _reference(model, prompt, completion)[0], atol=1e-4)


def test_head_sees_at_most_chunk_positions_per_call(model):
    """Memory: the vocab-sized logits exist for ``chunk`` positions at a time, never for all."""
    pairs = [([5, 6, 7], list(range(10, 210))), ([8], list(range(20, 120)))]
    calls = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: calls.append((out.numel() // out.shape[-1], out.shape[-1]))
    )
    try:
        teacher_forced_batch(model, pairs, chunk=32)
    finally:
        hook.remove()
    vocab = model.config.vocab_size
    assert all(rows <= 32 and v == vocab for rows, v in calls)
    assert len(calls) == -(-300 // 32)  # ceil(300 completion tokens / 32)
    assert sum(rows for rows, _ in calls) == 300


# Tiny random models of families whose ForCausalLM.forward changes the head's output, each with
# the knob set so that getting it wrong (or ignoring it) moves the entropies far beyond 1e-5.
SMALL = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "cohere": ("CohereConfig", dict(logit_scale=0.25)),  # multiplies
    "granite": ("GraniteConfig", dict(logits_scaling=4.0)),  # divides
    "hyperclovax": ("HyperCLOVAXConfig", dict(logits_scaling=4.0)),  # multiplies
    "falcon_h1": (  # lm_head_multiplier, read from the decoder
        "FalconH1Config",
        dict(
            lm_head_multiplier=0.25,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_d_state=8,
            mamba_n_groups=1,
            mamba_chunk_size=16,
        ),
    ),
    "gemma2": ("Gemma2Config", dict(final_logit_softcapping=10.0, head_dim=16)),
    "mpt": (  # logit_scale None: no scaling
        "MptConfig",
        dict(d_model=32, n_heads=2, n_layers=2, vocab_size=128, max_seq_len=128),
    ),
}


def _family_model(name):
    import transformers

    config_name, knobs = FAMILIES[name]
    base = {} if name == "mpt" else dict(SMALL)
    config = getattr(transformers, config_name)(**base, **knobs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # peaked, varied distributions (MPT's head is also its embedding)
        model.get_output_embeddings().weight.mul_(10.0 if name == "mpt" else 40.0)
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rescoring_equals_the_models_own_forward_in_every_family(family):
    """The head's scaling, soft-capping or multiplier is the model's own, whatever the family."""
    model = _family_model(family)
    pairs = [(p[:4] or [5], c[:24]) for p, c in _pairs(2, 5)]
    pairs = [([min(t, 127) for t in p], [min(t, 127) for t in c]) for p, c in pairs]
    spread = []
    for (prompt, completion), (ent, lp) in zip(
        pairs, teacher_forced_batch(model, pairs, chunk=7), strict=True
    ):
        if completion:
            ref_ent, ref_lp = _reference(model, prompt, completion)
            np.testing.assert_allclose(ent, ref_ent, atol=1e-5)
            np.testing.assert_allclose(lp, ref_lp, atol=1e-5)
            spread.extend(ref_ent)
    assert np.std(spread) > 0.05  # the entropies compared vary


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=30), st.integers(1, 120))
def test_batch_plan_respects_the_budget_and_covers_every_sequence(lengths, budget):
    batches = plan_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


def test_score_records_its_dtype_and_defaults_to_the_generation_dtype(tiny_model_dir, tmp_path):
    gen = tiny_generate(tiny_model_dir, tmp_path, 3, dtype="bfloat16")
    for dtype, expected in (("auto", "bfloat16"), ("float32", "float32")):
        out = tmp_path / f"scored-{dtype}"
        cfg = ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir), dtype=dtype)
        summary = run(cfg)
        assert summary["rows"] == 3 and summary["rescoring_seconds"] >= 0
        for row in read_table(out, GENERATIONS).to_pylist():
            assert json.loads(row["sampling"])["rescore_dtype"] == expected


def test_score_refuses_to_mix_dtypes_in_one_output(tiny_model_dir, tmp_path):
    gen = tiny_generate(tiny_model_dir, tmp_path, 2)
    out = tmp_path / "scored"
    run(ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir), dtype="float32"))
    before = sorted(p.name for p in out.glob("*.parquet"))
    cfg = ScoreConfig(input=str(gen), out=str(out), model=str(tiny_model_dir), dtype="bfloat16")
    with pytest.raises(ValueError, match=r"holds rows rescored in float32; resume with --dtype"):
        run(cfg)
    assert sorted(p.name for p in out.glob("*.parquet")) == before
