"""The [SKIP] token on the offline tiny model: added as one special token in a vocabulary padded
to 64 with mean-initialised rows, and read back as skipped steps from generated text."""

from __future__ import annotations

import pytest
import torch

from stepprune.cot.steps import SKIP_TOKEN
from stepprune.train.skip_token import VOCAB_MULTIPLE, add_skip_token, fit_embeddings


def base_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return tok, model


def test_skip_token_is_added_padded_and_mean_initialised(tiny_model_dir):
    tok, model = base_model(tiny_model_dir)
    n_tok = len(tok)
    model.resize_token_embeddings(n_tok, mean_resizing=False)  # an unpadded vocabulary
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    token = add_skip_token(tok)
    assert token.added and token.size == n_tok + 1 and token.token_id == n_tok
    before, after = fit_embeddings(model, token)
    assert (before, after) == (n_tok, -(-(n_tok + 1) // 64) * 64)
    assert after % VOCAB_MULTIPLE == 0 and model.config.vocab_size == after
    for w, w0 in ((model.get_input_embeddings().weight, emb0), (model.lm_head.weight, head0)):
        assert torch.equal(w[:n_tok], w0)  # old rows untouched
        mean = w0.mean(dim=0)
        assert torch.allclose(w[n_tok:], mean.expand(after - n_tok, -1), atol=1e-6)
    ids = tok("a [SKIP] b")["input_ids"]
    assert ids.count(token.token_id) == 1 and len(tok.tokenize(SKIP_TOKEN)) == 1
    assert tok.decode(ids, skip_special_tokens=False) == "a [SKIP] b"
    again = add_skip_token(tok)  # a model that already has [SKIP] is left alone
    assert not again.added and again.token_id == token.token_id
    assert fit_embeddings(model, again) == (after, after)


def test_skip_token_in_padded_vocabulary_reuses_a_spare_row(tiny_model_dir):
    tok, model = base_model(tiny_model_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows > len(tok) + 1  # the tiny model ships padded
    old = model.lm_head.weight.detach().clone()
    token = add_skip_token(tok)
    assert fit_embeddings(model, token) == (rows, rows)
    mean = old[: token.base_size].mean(dim=0)
    assert torch.allclose(model.lm_head.weight[token.token_id], mean, atol=1e-6)
    others = [i for i in range(rows) if i != token.token_id]
    assert torch.equal(model.lm_head.weight[others], old[others])


# --- steps in model output --------------------------------------------------------------------


def _skip_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tok, add_skip_token(tok).token_id


def _row_for(tok, completion: str):
    from stepprune.backends import Completion
    from stepprune.cot.trajectory import RunInfo, build_row
    from stepprune.data.load import Problem

    ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    comp = Completion(ids, [0.5] * len(ids), [-0.1] * len(ids), "stop", "exact")
    info = RunInfo("tiny", "hf", {}, {}, r"\n\s*\n")
    problem = Problem("p0", "toy", "3 + 5?", "8")
    return ids, build_row(problem, 0, "Q", [1], comp, tok, {tok.eos_token_id}, info, 0)


def test_generated_skip_tokens_are_skipped_steps(tiny_model_dir):
    tok, skip = _skip_tokenizer(tiny_model_dir)
    text = "<think>\nA = 3.\n\n[SKIP]\n\n[SKIP]\n\nSo 8.\n</think>\n\nThe answer is \\boxed{8}."
    ids, row = _row_for(tok, text)
    assert ids.count(skip) == 2 and row["completion"] == text  # decoding keeps [SKIP]
    steps = row["steps"]
    assert [(s["text"], s["is_skip"]) for s in steps] == [
        ("A = 3.", False),
        ("", True),
        ("", True),
        ("So 8.", False),
    ]
    for s in steps[1:3]:  # a skipped step is its one [SKIP] token and the blank line after it
        span = ids[s["token_start"] : s["token_end"]]
        assert span[0] == skip and tok.decode(span[1:]).strip() == ""
    assert row["correct"]


def test_adjacent_skip_tokens_each_count(tiny_model_dir):
    tok, _ = _skip_tokenizer(tiny_model_dir)
    _, row = _row_for(tok, "<think>\nA.\n\n[SKIP][SKIP]\n[SKIP]\n\nB [SKIP]\n</think>\n\n8")
    assert [(s["text"], s["is_skip"]) for s in row["steps"]] == [
        ("A.", False),
        ("", True),
        ("", True),
        ("", True),
        ("B", False),
        ("", True),
    ]


def test_generate_summary_counts_skips_the_model_wrote(tiny_model_dir, tmp_path):
    """Rows with 2 of 4 and 0 of 2 steps skipped: mean skip ratio (0.5 + 0) / 2, one row."""
    from stepprune.cot.summary import summarize_generations
    from stepprune.schema import GENERATIONS, to_table
    from stepprune.shards import write_table_atomic

    tok, _ = _skip_tokenizer(tiny_model_dir)
    _, a = _row_for(tok, "<think>\nA.\n\n[SKIP]\n\n[SKIP]\n\nB.\n</think>\n\n8")
    _, b = _row_for(tok, "<think>\nA.\n\nB.\n</think>\n\n8")
    b["problem_id"] = "p1"
    write_table_atomic(to_table([a, b], GENERATIONS), tmp_path / "part-0.parquet")
    summary = summarize_generations(tmp_path)
    assert summary["mean_skip_ratio"] == pytest.approx(0.25)
    assert summary["rows_with_skip"] == 1
