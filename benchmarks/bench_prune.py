"""Benchmark: ``stepprune prune`` on 70,000 synthetic trajectories (30 steps, 3,000 tokens each).

Goals (issue #4): <= 20 s on this 2-core machine; >= 20x faster than a straightforward per-row
Python implementation (kept below, run on the same input); within 2x of a bare Parquet scan of
the same columns; peak memory <= 2 GB. All figures come from one run of this script.

    .venv/bin/python benchmarks/bench_prune.py --rows 70000 --workdir /tmp/stepprune-bench

Each codec (``--codecs``) is used for both our output and the per-row baseline's. The
"encode-only" column times Parquet-encoding our output tables again on one thread: a floor
that any implementation writing that output pays on top of reading its input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stepprune.pruning.select import ROW_COLUMNS
from stepprune.schema import PRUNED
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


def bare_scan(gen: Path) -> tuple[float, float]:
    """Wall and CPU seconds to read the columns prune reads, with nothing else done."""
    start, cpu = time.perf_counter(), time.process_time()
    for f in sorted(gen.glob("*.parquet")):
        pq.read_table(f, columns=ROW_COLUMNS)
    return time.perf_counter() - start, time.process_time() - cpu


def encode_only(out: Path, compression: str) -> float:
    """Seconds to Parquet-encode prune's output tables again, one thread, nothing else done."""
    tables = [pq.read_table(f) for f in sorted(out.glob("*.parquet"))]
    start = time.perf_counter()
    for t in tables:
        pq.write_table(t, pa.BufferOutputStream(), compression=compression)
    return time.perf_counter() - start


def clear(out: Path) -> None:
    """Remove an earlier run's output and flush dirty pages before timing: otherwise the run
    pays for deleting and writing back up to 1 GB of its predecessor (the fsync of each shard
    waits for it), which made whichever codec ran first look up to 20 % slower."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()


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


def naive_rows(rows: list[dict], kappa: float) -> list[dict]:
    return [naive_row(r, kappa) for r in rows if r["correct"]]


def naive_prune(gen: Path, out: Path, kappa: float, compression: str) -> dict[str, float]:
    """Seconds per phase of the per-row baseline (its total is their sum)."""
    clear(out)
    out.mkdir(parents=True)
    names = ("read", "to_pylist", "rows", "from_pylist", "write")
    phases: dict[str, float] = dict.fromkeys(names, 0.0)

    def timed(name, fn, *a, **kw):
        start = time.perf_counter()
        result = fn(*a, **kw)
        phases[name] += time.perf_counter() - start
        return result

    for i, f in enumerate(sorted(gen.glob("*.parquet"))):
        table = timed("read", pq.read_table, f, columns=ROW_COLUMNS)
        rows = timed("to_pylist", table.to_pylist)
        result = timed("rows", naive_rows, rows, kappa)
        table = timed("from_pylist", pa.Table.from_pylist, result, schema=PRUNED.with_metadata())
        path = out / f"part-{i:05d}.parquet"
        timed("write", pq.write_table, table, path, compression=compression)
    return phases


CHILD = """
import json, resource, sys, time
from stepprune.stages.prune import PruneConfig, run
start = time.perf_counter()
summary = run(PruneConfig(input=sys.argv[1], out=sys.argv[2], kappa=0.8, overwrite=True,
                          compression=sys.argv[3]))
seconds = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(json.dumps({"seconds": seconds, "cpu": use.ru_utime + use.ru_stime,
                  "peak_mb": int(status.split()[0]) / 1024, "rows": summary["rows_out"]}))
"""


def ours(gen: Path, out: Path, compression: str) -> dict:
    """One ``stepprune prune`` run in a fresh process (so peak RSS is its own)."""
    clear(out)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(gen), str(out), compression],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=70_000)
    ap.add_argument("--per-shard", type=int, default=5_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/stepprune-bench"))
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--codecs", default="zstd,lz4,none", help="output codecs, used by both sides")
    ap.add_argument("--repeat", type=int, default=3, help="medians over this many scans/prunes")
    args = ap.parse_args()
    t0 = time.perf_counter()
    gen = make_workload(args.workdir, args.rows, args.per_shard)
    size = sum(f.stat().st_size for f in gen.glob("*.parquet")) / 2**30
    print(
        f"workload  {args.rows} trajectories x 30 steps x 3000 tokens, {size:.2f} GiB zstd "
        f"({time.perf_counter() - t0:.0f} s to make or find); medians of {args.repeat} runs"
    )
    scans = [bare_scan(gen) for _ in range(args.repeat)]
    scan, scan_cpu = median([s[0] for s in scans]), median([s[1] for s in scans])
    print(f"bare scan {scan:.2f} s wall, {scan_cpu:.2f} s CPU ({len(ROW_COLUMNS)} columns)")
    print(
        "codec | prune s | prune CPU s | vs scan | encode-only s | per-row s | speed-up "
        "| peak RSS MB | output MB"
    )
    out = args.workdir / "pruned"
    for codec in args.codecs.split(","):
        runs = [ours(gen, out, codec) for _ in range(args.repeat)]
        wall = median([r["seconds"] for r in runs])
        cpu = median([r["cpu"] for r in runs])
        peak = max(r["peak_mb"] for r in runs)
        out_mb = sum(f.stat().st_size for f in out.glob("*.parquet")) / 2**20
        encode = encode_only(out, codec)
        naive, phases = math.nan, {}
        if not args.skip_naive:
            phases = naive_prune(gen, args.workdir / "pruned-naive", 0.8, codec)
            naive = sum(phases.values())
        print(
            f"{codec} | {wall:.2f} | {cpu:.1f} | {wall / scan:.2f}x | {encode:.2f} | "
            f"{naive:.2f} | {naive / wall:.2f}x | {peak:.0f} | {out_mb:.0f}"
        )
        if phases:
            print("  per-row phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print(f"rows written {runs[-1]['rows']}")


if __name__ == "__main__":
    main()
