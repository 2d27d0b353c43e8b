"""The pruned schema against eval_results: kappa joins across the two, and pruned shards of the
previous version (kappa float32) still read, their kappa the decimal it was set to."""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepprune.schema import EVAL_RESULTS, PRUNED, SchemaError, check_file
from stepprune.shards import read_table
from stepprune.stages.prune import PruneConfig, run
from stepprune.synthetic import synthetic_table

JOIN = ["problem_id", "sample_index", "strategy", "kappa"]


def test_pruned_joins_eval_results_on_kappa(tiny_model_dir, eval_cots, tmp_path):
    import duckdb

    from stepprune.stages.eval import EvalConfig
    from stepprune.stages.eval import run as run_eval

    pruned = tmp_path / "pruned"
    run(PruneConfig(input=str(eval_cots), out=str(pruned), kappa=0.8, correct_only=False))
    ev = tmp_path / "eval"
    run_eval(
        EvalConfig(
            input=str(eval_cots),
            out=str(ev),
            model=str(tiny_model_dir),
            kappas=[0.2, 0.8],  # neither is exact in binary: float32 and float64 differ
            strategies=["low"],
            answer_tokens=2,
            dtype="float32",
            bootstrap=20,
        )
    )
    # The expected count, independently: trajectories in both, eval rows at kappa ~ 0.8.
    keys = {(r["problem_id"], r["sample_index"]) for r in read_table(pruned, PRUNED).to_pylist()}
    eval_rows = read_table(ev / "results", EVAL_RESULTS).to_pylist()
    expected = sum(
        (r["problem_id"], r["sample_index"]) in keys
        and r["strategy"] == "low"
        and math.isclose(r["kappa"], 0.8)
        for r in eval_rows
    )
    assert expected > 0 and expected < len(eval_rows)  # the 0.2 rows must not match

    p = pl.read_parquet(pruned / "*.parquet")
    e = pl.read_parquet(ev / "results" / "*.parquet")
    assert p.join(e, on=JOIN).height == expected
    sql = (
        f"select count(*) from read_parquet('{pruned}/*.parquet') p "
        f"join read_parquet('{ev}/results/*.parquet') e using ({', '.join(JOIN)})"
    )
    assert duckdb.sql(sql).fetchall() == [(expected,)]
    assert p.schema["kappa"] == e.schema["kappa"] == pl.Float64


def _as_version(table: pa.Table, version: int, kappa_type: pa.DataType) -> pa.Table:
    """``table`` as a pruned shard of ``version`` with ``kappa`` in ``kappa_type``, the way an
    older stepprune wrote it."""
    i = PRUNED.arrow.get_field_index("kappa")
    arrow = PRUNED.arrow.set(i, pa.field("kappa", kappa_type, nullable=False))
    meta = {b"stepprune.schema": b"pruned", b"stepprune.schema_version": str(version).encode()}
    return table.cast(arrow.with_metadata(meta))


def test_version_1_pruned_shards_read_with_kappa_widened(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    pq.write_table(synthetic_table(6, steps=5, tokens_per_step=3, seed=2), gen / "a.parquet")
    out = tmp_path / "out"
    run(PruneConfig(input=str(gen), out=str(out), kappa=0.2, correct_only=False))
    (current,) = sorted(out.glob("part-*.parquet"))
    table = pq.read_table(current)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(_as_version(table, 1, pa.float32()), mixed / "part-0.parquet")
    pq.write_table(table, mixed / "part-1.parquet")

    old = pq.read_table(mixed / "part-0.parquet")  # really the old layout, as written
    assert old.schema.metadata[b"stepprune.schema_version"] == b"1"
    assert old.schema.field("kappa").type == pa.float32()
    assert old.column("kappa")[0].as_py() != 0.2  # 0.20000000298023224
    check_file(mixed / "part-0.parquet", PRUNED)  # accepted: a version this stepprune reads

    got = read_table(mixed, PRUNED)
    assert got.schema.field("kappa").type == pa.float64()
    assert got.column("kappa").to_pylist() == [0.2] * (2 * table.num_rows)  # exact, both files
    assert got.slice(0, table.num_rows).drop_columns("kappa").equals(table.drop_columns("kappa"))
    sub = read_table(mixed, PRUNED, columns=["problem_id", "kappa"])
    assert sub.column("kappa").to_pylist() == [0.2] * (2 * table.num_rows)

    pq.write_table(_as_version(table, 3, pa.float64()), mixed / "part-2.parquet")
    with pytest.raises(SchemaError, match=r"part-2.parquet: 'pruned' schema version 3, .* 2, 1"):
        read_table(mixed, PRUNED)
