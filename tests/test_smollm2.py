"""Integration: the real embedded SmolLM2-135M-Instruct on real MAWPS problems."""

import numpy as np
import pytest
import torch

from stepprune.backends.entropy import entropy_reference
from stepprune.schema import GENERATIONS
from stepprune.shards import read_table
from stepprune.stages.generate import GenerateConfig, run

pytestmark = pytest.mark.slow


def test_generate_on_real_model_and_problems(smollm2_dir, data_dir, tmp_path):
    out = tmp_path / "gen"
    cfg = GenerateConfig(
        problems="mawps_singleop",
        data_dir=str(data_dir),
        limit=3,
        out=str(out),
        max_new_tokens=48,
        batch_size=3,
        greedy=True,
        dtype="float32",
    )
    summary = run(cfg)
    table = read_table(out, GENERATIONS).to_pylist()
    assert summary["rows"] == 3 and {r["problem_id"] for r in table} == {
        "mawps_singleop-0",
        "mawps_singleop-1",
        "mawps_singleop-2",
    }
    assert table[0]["gold_answer"] == "14.0"  # first MAWPS single-op row, target 14.0
    assert all(r["model"].startswith("smollm2-135m-instruct") for r in table)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    for row in table:
        prompt, gen = row["prompt_token_ids"], row["token_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + gen])).logits[0, len(prompt) - 1 : -1]
        ref = entropy_reference(logits.double().numpy())
        assert np.abs(np.array(row["token_entropies"]) - ref).max() < 1e-3
        assert logits.argmax(-1).tolist() == gen  # greedy
        spans = [(s["token_start"], s["token_end"]) for s in row["steps"]]
        if spans:
            assert spans[0][0] == 0 and spans[-1][1] == row["n_thinking_tokens"]
        # Independent recount of correctness, for every row: a plain number (with an optional
        # unit word) is compared by value; anything else with digits goes to math-verify, a
        # second grader; an answer without digits never matches a numeric MAWPS gold.
        expect = _recount(row["extracted_answer"], row["gold_answer"])
        assert row["correct"] == expect


def _recount(ans: str | None, gold: str) -> bool:
    import re

    if ans is None or not re.search(r"\d", ans):
        return False
    plain = re.fullmatch(r"\s*\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)\s*[A-Za-z ]*\.?\s*", ans)
    if plain:
        return abs(float(plain.group(1).replace(",", "")) - float(gold)) < 1e-6
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(f"${ans}$")))
