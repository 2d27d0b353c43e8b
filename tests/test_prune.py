"""Pruning: literal cases per strategy, properties, errors, atomic output, interop."""

import math
from fractions import Fraction

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepprune.prune import n_to_skip
from stepprune.schema import GENERATIONS, PRUNED, SchemaError, to_table
from stepprune.shards import read_table
from stepprune.stages.prune import PruneConfig, run
from stepprune.synthetic import make_row, synthetic_table

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
    # Give the steps real token spans: 10 step tokens total was the step view; rescale so
    # that low at kappa=0.4 removes B and D -> the token budget is their tokens.
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


def test_filters(tmp_path):
    rows = [
        make_row("ok", STEPS, ENTS),
        make_row("bad", STEPS, ENTS, correct=False),
        make_row("long", STEPS * 3, ENTS * 3),
    ]
    out = prune_rows(tmp_path, rows, max_tokens=20)
    assert [r["problem_id"] for r in out] == ["ok"]
    assert {r["problem_id"] for r in prune_rows(tmp_path, rows, correct_only=False)} == {
        "ok",
        "bad",
        "long",
    }


def test_bad_inputs_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="kappa"):
        PruneConfig(kappa=1.5).spec()
    gen = write_gen(tmp_path, [make_row("p", STEPS, ENTS)])
    pq.write_table(pa.table({"x": [1]}), gen / "zz-foreign.parquet")
    with pytest.raises(SchemaError, match="zz-foreign.parquet: not a stepprune file"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o1")))
    assert not (tmp_path / "o1").exists()
    (gen / "zz-foreign.parquet").unlink()
    nan = make_row("n", STEPS, ENTS)
    nan["steps"][2]["entropy_sum"] = float("nan")
    pq.write_table(to_table([make_row("p2", STEPS, ENTS)], GENERATIONS), gen / "a.parquet")
    table = pa.Table.from_pylist([nan], schema=GENERATIONS.with_metadata())
    pq.write_table(
        table, gen / "b.parquet"
    )  # bypasses the writer's NaN check, as a foreign tool might
    with pytest.raises(ValueError, match=r"b.parquet: row 0: step entropy is NaN"):
        run(PruneConfig(input=str(gen), out=str(tmp_path / "o2")))
    assert not (tmp_path / "o2").exists()
    assert not list(tmp_path.glob(".o2.tmp-*"))


def test_existing_output_needs_overwrite(tmp_path):
    gen = write_gen(tmp_path, [make_row("p", STEPS, ENTS)])
    out = tmp_path / "out"
    run(PruneConfig(input=str(gen), out=str(out)))
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(PruneConfig(input=str(gen), out=str(out), kappa=0.2))
    run(PruneConfig(input=str(gen), out=str(out), kappa=0.2, overwrite=True))
    assert read_table(out, PRUNED).column("kappa").to_pylist() == [pytest.approx(0.2)]
    card = (out / "README.md").read_text()
    assert "| kappa | 0.2 |" in card and "| rows out | 1 |" in card


def test_interop_datasets_polars_duckdb(tmp_path):
    import duckdb
    from datasets import load_dataset

    gen = tmp_path / "gen"
    gen.mkdir()
    pq.write_table(synthetic_table(50, steps=6, tokens_per_step=5, seed=1), gen / "a.parquet")
    out = tmp_path / "out"
    summary = run(PruneConfig(input=str(gen), out=str(out), correct_only=False))
    ds = load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    df = pl.read_parquet(out / "*.parquet")
    n = duckdb.sql(f"select count(*), sum(n_skipped) from '{out}/*.parquet'").fetchall()[0]
    assert len(ds) == df.height == n[0] == summary["rows_out"] == 50
    assert n[1] == 50 * 4  # floor(0.8 * 6) per row
    assert ds[0]["completion"].startswith("<think>\n") and "[SKIP]" in ds[0]["completion"]
    assert df["compression_ratio"].to_list() == pytest.approx([2 / 6] * 50)


def test_generate_then_prune_end_to_end(tiny_model_dir, tmp_path):
    from conftest import tiny_generate

    gen = tiny_generate(
        tiny_model_dir,
        tmp_path,
        6,
        max_new_tokens=60,
        temperature=1.2,
        prompt_template="{problem}\n\n",
    )
    out = tmp_path / "pruned"
    run(PruneConfig(input=str(gen), out=str(out), kappa=0.5, correct_only=False))
    source = {r["problem_id"]: r for r in read_table(gen, GENERATIONS).to_pylist()}
    rows = read_table(out, PRUNED).to_pylist()
    assert len(rows) == 6
    assert max(r["n_steps"] for r in rows) >= 2  # the random model does write blank lines
    for r in rows:
        steps = source[r["problem_id"]]["steps"]
        order = sorted(range(len(steps)), key=lambda i: (steps[i]["entropy_sum"], i))
        k = math.floor(0.5 * len(steps))
        assert r["skip_mask"] == [i in set(order[:k]) for i in range(len(steps))]
        assert r["original_thinking"] == source[r["problem_id"]]["thinking"]
        assert r["compressed_thinking"].count("[SKIP]") == k + sum(
            s["is_skip"] for s in steps if s["index"] not in order[:k]
        )


def test_killed_run_leaves_no_output(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(6):
        table = synthetic_table(1500, steps=20, tokens_per_step=40, seed=i, start=1500 * i)
        pq.write_table(table, gen / f"part-{i}.parquet")
    out = tmp_path / "out"
    code = (
        "from stepprune.stages.prune import PruneConfig, run; "
        f"run(PruneConfig(input={str(gen)!r}, out={str(out)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*/part-*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the finished shards sit only in the hidden staging directory
    summary = run(PruneConfig(input=str(gen), out=str(out)))
    assert not list(tmp_path.glob(".out.tmp-*"))  # cleaned by the rerun
    assert read_table(out, PRUNED).num_rows == summary["rows_out"] > 0


def test_prune_cli(tmp_path):
    import subprocess
    import sys

    gen = write_gen(
        tmp_path, [make_row("p", STEPS, ENTS), make_row("q", STEPS, ENTS, correct=False)]
    )
    out = tmp_path / "cli-out"
    cmd = [sys.executable, "-m", "stepprune.cli", "prune", "-i", str(gen), "--out", str(out)]
    bad = subprocess.run(cmd + ["--kappa", "1.5"], capture_output=True, text=True)
    assert bad.returncode == 1 and "kappa must be in [0, 1]" in bad.stderr and not out.exists()
    ok = subprocess.run(cmd + ["--kappa", "0.4", "--all"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "rows            2 of 2" in ok.stdout
    assert read_table(out, PRUNED).column("n_skipped").to_pylist() == [2, 2]
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr
