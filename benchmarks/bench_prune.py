"""Benchmark: ``stepprune prune`` on 70,000 synthetic trajectories (30 steps, 3,000 tokens each).

Goals (issue #4): <= 20 s on this 2-core machine; >= 20x faster than a straightforward per-row
Python implementation (kept below, run on the same input); within 2x of a bare Parquet scan of
the same columns; peak memory <= 2 GB. All figures come from one run of this script.

    .venv/bin/python benchmarks/bench_prune.py --rows 70000 --workdir /tmp/stepprune-bench
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stepprune.schema import PRUNED
from stepprune.stages.prune import ROW_COLUMNS
from stepprune.synthetic import synthetic_table

SKIP = "[SKIP]"


def make_workload(workdir: Path, rows: int, per_shard: int) -> Path:
    gen = workdir / f"gen-{rows}"
    if (gen / "DONE").exists():
        return gen
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    for i, start in enumerate(range(0, rows, per_shard)):
        n = min(per_shard, rows - start)
        table = synthetic_table(n, steps=30, tokens_per_step=100, seed=i, start=start)
        pq.write_table(table, gen / f"part-{i:05d}.parquet", compression="zstd")
    (gen / "DONE").write_text("ok")
    return gen


def bare_scan(gen: Path) -> float:
    start = time.perf_counter()
    for f in sorted(gen.glob("*.parquet")):
        pq.read_table(f, columns=ROW_COLUMNS)
    return time.perf_counter() - start


def naive_row(row: dict, kappa: float) -> dict:
    """The straightforward way: sort each row's steps in Python and rebuild its text."""
    steps = row["steps"]
    k = math.floor(kappa * len(steps) + 1e-9)
    order = sorted(range(len(steps)), key=lambda i: (steps[i]["entropy_sum"], i))
    skipped = set(order[:k])
    pieces = [s["separator"] + (SKIP if i in skipped else s["text"]) for i, s in enumerate(steps)]
    tail = row["thinking"][(steps[-1]["char_end"] if steps else 0) :]
    compressed = "".join(pieces) + tail
    pruned = sum(steps[i]["n_tokens"] for i in skipped)
    n_think = row["n_thinking_tokens"]
    return dict(
        problem_id=row["problem_id"],
        sample_index=row["sample_index"],
        source=row["source"],
        problem=row["problem"],
        gold_answer=row["gold_answer"],
        model=row["model"],
        entropy_source=row["entropy_source"],
        correct=row["correct"],
        original_thinking=row["thinking"],
        compressed_thinking=compressed,
        answer_text=row["answer_text"],
        skip_mask=[i in skipped for i in range(len(steps))],
        n_steps=len(steps),
        n_skipped=k,
        original_thinking_tokens=n_think,
        kept_thinking_tokens=n_think - pruned,
        compression_ratio=(n_think - pruned) / n_think,
        kappa=kappa,
        strategy="low",
        score="sum",
        budget="steps",
        seed=0,
        prompt=row["prompt"],
        completion="<think>\n" + compressed.strip() + "\n</think>\n\n" + row["answer_text"],
    )


def naive_prune(gen: Path, out: Path, kappa: float, compression: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i, f in enumerate(sorted(gen.glob("*.parquet"))):
        rows = pq.read_table(f, columns=ROW_COLUMNS).to_pylist()
        result = [naive_row(r, kappa) for r in rows if r["correct"]]
        table = pa.Table.from_pylist(result, schema=PRUNED.with_metadata())
        pq.write_table(table, out / f"part-{i:05d}.parquet", compression=compression)
    return time.perf_counter() - start


CHILD = """
import json, resource, sys, time
from stepprune.stages.prune import PruneConfig, run
start = time.perf_counter()
summary = run(PruneConfig(input=sys.argv[1], out=sys.argv[2], kappa=0.8, overwrite=True,
                          compression=sys.argv[3]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "rows": summary["rows_out"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=70_000)
    ap.add_argument("--per-shard", type=int, default=5_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/stepprune-bench"))
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--compression", default="zstd", help="output codec, for both: zstd|lz4|none")
    args = ap.parse_args()
    t0 = time.perf_counter()
    gen = make_workload(args.workdir, args.rows, args.per_shard)
    size = sum(f.stat().st_size for f in gen.glob("*.parquet")) / 2**30
    print(
        f"workload         {args.rows} trajectories x 30 steps x 3000 tokens, {size:.2f} GiB "
        f"zstd ({time.perf_counter() - t0:.0f} s to make or find)"
    )
    scan = bare_scan(gen)
    out = args.workdir / "pruned"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(gen), str(out), args.compression],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"bare scan        {scan:.2f} s  (the {len(ROW_COLUMNS)} columns prune reads)")
    print(
        f"stepprune prune  {ours['seconds']:.2f} s  ({ours['rows']} rows written, "
        f"peak RSS {ours['peak_mb']:.0f} MB)"
    )
    print(f"vs bare scan     {ours['seconds'] / scan:.2f}x")
    if not args.skip_naive:
        naive = naive_prune(gen, args.workdir / "pruned-naive", 0.8, args.compression)
        print(f"per-row Python   {naive:.2f} s")
        print(f"speed-up         {naive / ours['seconds']:.1f}x over per-row Python")


if __name__ == "__main__":
    main()
