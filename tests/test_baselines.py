"""bench's training-free baselines (evaluation/baselines.py, generation/budget.py): specs and
their one-line errors, budget forcing against a second route (transformers' own greedy
generate, called by hand), and a bench with every kind of baseline recounted from its shards."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import biased_copy

from stepprune.data.prompts import INSTRUCT_LEAD_IN, THINK_LEAD_IN
from stepprune.evaluation.baselines import COD, DIRECT, NOTHINK, generate_overrides, parse_baseline
from stepprune.generation.budget import lead_in


def test_specs_parse_and_bad_ones_are_one_line():
    assert parse_baseline("b512=budget:512").budget == 512
    assert parse_baseline("m=budget:match=eg").match == "eg"
    assert parse_baseline("cod=prompt:cod").template.endswith("\\boxed{{}}.")
    assert COD in parse_baseline("cod=prompt:cod").template
    own = parse_baseline("short=prompt:Answer in one line.").template
    assert own == "{problem}\n\nAnswer in one line."
    assert parse_baseline("t=prompt:Q: {problem} A:").template == "Q: {problem} A:"
    for bad, message in [
        ("budget:5", "expected NAME=SPEC"),
        ("b=budget:0", "budget:N"),
        ("b=budget:many", "budget:N"),
        ("n=nothink:x", "budget:N"),
        ("a/b=nothink", "letters, digits"),
        ("t=prompt:{x}", "prompt_template"),
    ]:
        with pytest.raises(ValueError, match=message) as e:
            parse_baseline(bad)
        assert "\n" not in str(e.value)


def test_nothink_prefills_a_closed_thinking_or_asks_for_the_answer():
    b = parse_baseline("n=nothink")
    assert generate_overrides(b, "opens") == {"prompt_prefill": NOTHINK}
    assert generate_overrides(b, "tags") == {"prompt_prefill": "<think>\n" + NOTHINK}
    assert generate_overrides(b, "none") == {"prompt_template": DIRECT}
    assert generate_overrides(parse_baseline("m=budget:match=x"), "none", 7.6) == {
        "thinking_budget": 8
    }
    assert lead_in("<|user|>x<think>\n", "a b") == THINK_LEAD_IN
    assert lead_in("<|user|>x", "a b") == INSTRUCT_LEAD_IN
    assert lead_in("<|user|>x", "<think>a</think> b") == INSTRUCT_LEAD_IN


def hand_greedy(model, ids: list[int], n: int, stop: set[int]) -> list[int]:
    """Greedy tokens after ``ids`` by transformers directly, up to and with the first stop."""
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None
    )[0, len(ids) :].tolist()
    end = next((i for i, t in enumerate(out) if t in stop), None)
    return out if end is None else out[: end + 1]


def test_budget_forcing_equals_cut_then_lead_in_then_answer(tiny_model_dir, tmp_path):
    from conftest import tiny_generate
    from transformers import AutoModelForCausalLM, AutoTokenizer

    budget, answer = 5, 6
    out = tiny_generate(
        tiny_model_dir, tmp_path, 3, greedy=True, thinking_budget=budget, answer_tokens=answer
    )
    rows = pl.read_parquet(f"{out}/*.parquet").sort("problem_id")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    stop = {tok.eos_token_id}
    lead = tok(INSTRUCT_LEAD_IN, add_special_tokens=False)["input_ids"]
    forced = 0
    for r in rows.iter_rows(named=True):
        prompt = list(r["prompt_token_ids"])
        first = hand_greedy(model, prompt, budget, stop)
        expected = first
        if len(first) == budget and first[-1] not in stop:  # cut at the budget
            forced += 1
            expected = first + lead + hand_greedy(model, prompt + first + lead, answer, stop)
            ent = r["token_entropies"][budget : budget + len(lead)]
            assert ent == [0.0] * len(lead)  # the forced lead-in was not sampled
        assert list(r["token_ids"]) == expected
        assert r["n_tokens"] == len(expected)
        assert json.loads(r["sampling"])["thinking_budget"] == budget
    assert forced >= 1  # the tiny model runs past 5 tokens


def problems(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"problem": f"{i} pears?", "answer": str(i)}) + "\n" for i in range(n))
    )
    return path


def test_bench_runs_every_baseline_and_pairs_the_match(tiny_model_dir, tmp_path):
    from stepprune.stages.bench import BenchConfig, run

    short = biased_copy(tiny_model_dir, tmp_path / "short")
    cfg = BenchConfig(
        models=[f"base={tiny_model_dir}", f"short={short}"],
        baselines=[
            "b3=budget:3",
            "b8=budget:8",
            "m=budget:match=short",
            "nothink=nothink",
            "cod=prompt:cod",
        ],
        benchmarks=[str(problems(tmp_path / "pears.jsonl", 4))],
        out=str(tmp_path / "out"),
        greedy=True,
        max_new_tokens=16,
        answer_tokens=4,
        dtype="float32",
        bootstrap=100,
        prompt_template="{problem}",
    )
    run(cfg)
    table = pl.read_csv(tmp_path / "out" / "bench.csv").filter(pl.col("benchmark") == "pears")
    assert table["model"].to_list() == ["base", "short", "b3", "b8", "m", "nothink", "cod"]

    def shard(name):
        return pl.read_parquet(f"{cfg.out}/generations/{name}/pears/*.parquet")

    match = round(shard("short")["n_thinking_tokens"].mean())
    assert json.loads(shard("m")["sampling"][0])["thinking_budget"] == max(1, match)
    for name, n in (("b3", 3), ("b8", 8)):
        lens = shard(name)["n_tokens"].to_list()
        assert max(lens) <= n + len(INSTRUCT_LEAD_IN) + 4  # cut, lead-in (chars >= tokens), answer
        row = table.filter(pl.col("model") == name).row(0, named=True)
        assert row["len"] == pytest.approx(sum(lens) / len(lens))
    assert all("Give only the final answer" in p for p in shard("nothink")["prompt"])
    assert all(COD in p for p in shard("cod")["prompt"])
    paired = pl.read_csv(tmp_path / "out" / "paired.csv").filter(pl.col("benchmark") == "pears")
    pairs = list(zip(paired["model"], paired["base"], strict=True))
    assert pairs[-1] == ("short", "m") and ("m", "base") in pairs and len(pairs) == 7
    d = shard("short")["n_tokens"].mean() - shard("m")["n_tokens"].mean()
    assert paired.filter(pl.col("base") == "m")["d_len"][0] == pytest.approx(d)
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 1000


def test_a_prompt_that_closed_the_thinking_leaves_no_thinking(tiny_model_dir):
    from transformers import AutoTokenizer

    from stepprune.backends import Completion
    from stepprune.cot.trajectory import RunInfo, build_row
    from stepprune.data.load import Problem

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("So 1 + 2 = 3.\n\nThe answer is \\boxed{3}.", add_special_tokens=False)["input_ids"]
    ids.append(tok.eos_token_id)
    comp = Completion(ids, [0.5] * len(ids), [-0.1] * len(ids), "stop", "exact")
    info = RunInfo(model="m", backend="hf", sampling={}, versions={}, step_pattern=r"\n\s*\n")
    prompt = "<|im_start|>assistant\n<think>\n" + NOTHINK  # NoThinking's prefill
    row = build_row(Problem("p", "s", "1 + 2?", "3"), 0, prompt, [1], comp, tok, {ids[-1]}, info, 0)
    assert (row["n_thinking_tokens"], row["n_steps"], row["thinking"]) == (0, 0, "")
    assert row["correct"] and row["answer_text"].startswith("So 1 + 2 = 3.")
    # the same completion after an open prompt: its first paragraph is thinking
    open_row = build_row(
        Problem("p", "s", "1 + 2?", "3"),
        0,
        "<|im_start|>assistant\n",
        [1],
        comp,
        tok,
        {ids[-1]},
        info,
        0,
    )
    assert open_row["n_steps"] == 1 and open_row["n_thinking_tokens"] > 0
