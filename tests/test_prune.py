"""Pruning semantics: literal cases per strategy, ties, seeds, token control, properties."""

import math
from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepprune.pruning.select import n_to_skip
from stepprune.schema import GENERATIONS, PRUNED, to_table
from stepprune.shards import read_table
from stepprune.stages.prune import PruneConfig, run
from stepprune.synthetic import make_row

# Step entropies (sums): A=5, B=1, C=3, D=2, E=4 -> ascending B, D, C, E, A.
STEPS = ["A a", "B b", "C c", "D d", "E e"]
ENTS = [[2.0, 3.0], [0.5, 0.5], [1.0, 2.0], [1.0, 1.0], [3.0, 1.0]]


def write_gen(tmp_path, rows, name="gen"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    pq.write_table(to_table(rows, GENERATIONS), d / "part-0.parquet")
    return d


def prune_rows(tmp_path, rows, **kw):
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    cfg = PruneConfig(input=str(write_gen(tmp_path, rows)), out=str(out), **kw)
    run(cfg)
    return read_table(out, PRUNED).to_pylist()


def thinking(texts):
    return "\n\n".join(texts) + "\n"


@pytest.mark.parametrize(
    "kw,expected",
    [
        (dict(kappa=0.4, strategy="low"), ["A a", "[SKIP]", "C c", "[SKIP]", "E e"]),
        (dict(kappa=0.4, strategy="high"), ["[SKIP]", "B b", "C c", "D d", "[SKIP]"]),
        (dict(kappa=0.6, strategy="low"), ["A a", "[SKIP]", "[SKIP]", "[SKIP]", "E e"]),
        (dict(kappa=0.6, strategy="low", merge_skips=True), ["A a", "[SKIP]", "E e"]),
        (
            dict(kappa=0.6, strategy="low", score="mean"),
            ["A a", "[SKIP]", "[SKIP]", "[SKIP]", "E e"],
        ),
        (
            dict(kappa=0.8, strategy="low", protect_ends=True),
            ["A a", "[SKIP]", "[SKIP]", "[SKIP]", "E e"],
        ),
        (
            dict(kappa=0.4, strategy="high", protect_ends=True),
            ["A a", "B b", "[SKIP]", "[SKIP]", "E e"],
        ),
        (
            dict(kappa=0.5, strategy="low", budget="tokens"),
            ["A a", "[SKIP]", "C c", "[SKIP]", "E e"],
        ),
    ],
)
def test_literal_cases(tmp_path, kw, expected):
    (row,) = prune_rows(tmp_path, [make_row("p", STEPS, ENTS)], **kw)
    assert row["compressed_thinking"] == thinking(expected)
    assert row["original_thinking"] == thinking(STEPS)
    assert row["kappa"] == pytest.approx(kw["kappa"])
    assert row["completion"] == (
        "<think>\n" + thinking(expected).strip() + "\n</think>\n\nSo the answer is \\boxed{1}."
    )


def test_counts_and_ratio_literal(tmp_path):
    (row,) = prune_rows(tmp_path, [make_row("p", STEPS, ENTS)], kappa=0.4)
    assert row["skip_mask"] == [False, True, False, True, False]
    assert (row["n_steps"], row["n_skipped"]) == (5, 2)
    assert (row["original_thinking_tokens"], row["kept_thinking_tokens"]) == (10, 6)
    assert row["compression_ratio"] == pytest.approx(0.6)


def test_ties_prune_the_earlier_step(tmp_path):
    (row,) = prune_rows(tmp_path, [make_row("p", ["x", "y", "z"], [[1.0]] * 3)], kappa=0.34)
    assert row["skip_mask"] == [True, False, False]


def test_random_is_seeded(tmp_path):
    rows = [make_row(f"p{i}", STEPS, ENTS) for i in range(20)]
    a = prune_rows(tmp_path, rows, kappa=0.4, strategy="random", seed=1)
    b = prune_rows(tmp_path, rows, kappa=0.4, strategy="random", seed=1)
    c = prune_rows(tmp_path, rows, kappa=0.4, strategy="random", seed=2)
    assert [r["skip_mask"] for r in a] == [r["skip_mask"] for r in b]
    assert [r["skip_mask"] for r in a] != [r["skip_mask"] for r in c]
    assert all(sum(r["skip_mask"]) == 2 for r in a)
    assert len({tuple(r["skip_mask"]) for r in a}) > 3  # not the same steps every time


def test_token_strategy_drops_lowest_tokens(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = make_row("p", STEPS, ENTS)
    ids = tok(row["thinking"], add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(0)
    ents = rng.random(len(ids)).round(3).tolist()
    row.update(
        token_ids=ids,
        token_entropies=ents,
        token_logprobs=[0.0] * len(ids),
        n_tokens=len(ids),
        n_thinking_tokens=len(ids),
    )
    # The steps keep their 2-token spans (so low at kappa=0.4 removes B and D: a budget of 4
    # tokens); the last one runs to the end of the real ids, so the spans still partition them.
    last = row["steps"][-1]
    last.update(token_end=len(ids), n_tokens=len(ids) - last["token_start"])
    (out,) = prune_rows(tmp_path, [row], kappa=0.4, strategy="token", tokenizer=str(tiny_model_dir))
    budget = 4  # B (2 tokens) + D (2 tokens)
    keep = np.sort(np.lexsort((np.arange(len(ents)), ents))[budget:])
    assert out["compressed_thinking"] == tok.decode([ids[i] for i in keep])
    assert out["n_skipped"] == 0 and out["kept_thinking_tokens"] == len(ids) - budget


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.floats(0, 10), min_size=1, max_size=4), min_size=0, max_size=12),
    st.sampled_from([0.0, 0.1, 0.29, 0.5, 0.8, 1.0]),
    st.sampled_from(["low", "high", "random"]),
)
def test_properties(tmp_path_factory, step_ents, kappa, strategy):
    tmp = tmp_path_factory.mktemp("prop")
    texts = [f"step {i} t" for i in range(len(step_ents))]
    row = make_row("p", texts, step_ents)
    a = prune_rows(tmp, [row], kappa=kappa, strategy=strategy, seed=3)[0]
    n = len(texts)
    k = math.floor(Fraction(str(kappa)) * n)
    assert sum(a["skip_mask"]) == a["n_skipped"] == k
    kept = [t for t, s in zip(texts, a["skip_mask"], strict=True) if not s]
    body = [t for t in a["compressed_thinking"].strip().split("\n\n") if t not in ("[SKIP]", "")]
    assert body == kept  # kept steps unchanged and in order
    if kappa == 0.0:
        assert a["compressed_thinking"] == row["thinking"]
    if kappa == 1.0 and n:
        assert set(a["compressed_thinking"].strip().split("\n\n")) == {"[SKIP]"}
    if strategy == "low" and 0 < k < n:  # every skipped step scores <= every kept step
        sums = [sum(e) for e in step_ents]
        skipped = [s for s, m in zip(sums, a["skip_mask"], strict=True) if m]
        assert (
            max(skipped)
            <= min(s for s, m in zip(sums, a["skip_mask"], strict=True) if not m) + 1e-5
        )
    b = prune_rows(tmp, [row], kappa=kappa, strategy=strategy, seed=3)[0]
    assert a == b


def test_n_to_skip_floor():
    assert [n_to_skip(0.29, 100), n_to_skip(0.8, 5), n_to_skip(0.7, 10)] == [29, 4, 7]
