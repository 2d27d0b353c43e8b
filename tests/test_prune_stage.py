"""The prune stage: filters, input errors, atomic and resumable output, shard pairing, interop."""

import math
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_prune import ENTS, STEPS, prune_rows, write_gen

from stepprune.schema import GENERATIONS, PRUNED, SchemaError, to_table
from stepprune.shards import read_table
from stepprune.stages.prune import PruneConfig, run
from stepprune.synthetic import make_row, synthetic_table


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
    with pytest.raises(ValueError, match="compression must be one of .* got 'foo'"):
        run(PruneConfig(input=str(tmp_path), out=str(tmp_path / "o0"), compression="foo"))
    assert not (tmp_path / "o0").exists()
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
    # floor(0.2 * 5) = 1 step pruned: B, 2 of the 10 thinking tokens, exactly a 20 % cut,
    # which belongs in the 20-30 % bin (not 10-20 % through float32 rounding).
    bins = dict(re.findall(r"^\| (\d+–\d+%) \| (\d+) \|$", card, re.M))
    assert bins["20–30%"] == "1" and sum(map(int, bins.values())) == 1
    assert "| thinking-token reduction, mean | 20.0% |" in card
    assert "| compression | zstd |" in card
    assert 'data_files="out/*.parquet"' in card and ".tmp-" not in card  # not the staging dir
    import yaml

    meta = yaml.safe_load(card.split("---")[1])
    assert meta["configs"] == [{"config_name": "default", "data_files": "*.parquet"}]
    assert meta["task_categories"] == ["text-generation"] and meta["license"] == "other"
    assert 'add_special_tokens({"additional_special_tokens": ["[SKIP]"]})' in card


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


def test_shards_stay_paired_with_their_input(tmp_path):
    # Shard i+1 is read while shard i is pruned and earlier shards are written: each output
    # shard must still hold exactly its own input shard's rows, in order.
    gen = tmp_path / "gen"
    gen.mkdir()
    inputs = []
    for i in range(4):
        table = synthetic_table(30 + 7 * i, steps=5, tokens_per_step=3, seed=i, start=100 * i)
        pq.write_table(table, gen / f"part-{i}.parquet")
        inputs.append(table.filter(table.column("correct")))
    out = tmp_path / "out"
    run(PruneConfig(input=str(gen), out=str(out)))
    outputs = sorted(out.glob("part-*.parquet"))
    assert len(outputs) == 4
    for table, path in zip(inputs, outputs, strict=True):
        got = pq.read_table(path)
        assert got.column("problem_id").to_pylist() == table.column("problem_id").to_pylist()
        assert got.column("original_thinking").equals(table.column("thinking"))


def test_generate_then_prune_end_to_end(tiny_model_dir, tmp_path):
    from conftest import tiny_generate

    gen = tiny_generate(
        tiny_model_dir,
        tmp_path,
        6,
        max_new_tokens=60,
        temperature=1.2,
        prompt_template="{problem}\n\n",
        seed=1,  # hf now samples the untruncated distribution; this seed writes blank lines
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
