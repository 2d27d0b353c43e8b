"""Benchmark: ``generate --executor ray`` with two CPU actors against one local process, on the
same problems (issue #17: a measured figure on this machine, with its honest limits).

Both runs use the hf backend and greedy decoding, so they must write the same rows (checked).
The local run is one process with all cores; the Ray run starts a local Ray with ``--cpus``
CPUs and a pool of ``--actors`` engines, each of which Ray gives one CPU (and so one torch
thread). Printed: wall time of each whole run (engine loads and, for Ray, its start included),
the generation time each stage reports (engine loads excluded: for Ray, from the first unit an
actor started to the last row written), and their ratios. Run alone:

    .venv/bin/python benchmarks/bench_ray_actors.py --problems 32 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _rows(out) -> dict:
    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    rows = read_table(out, GENERATIONS, columns=["problem_id", "sample_index", "token_ids"])
    return {(r["problem_id"], r["sample_index"]): r["token_ids"] for r in rows.to_pylist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    ap.add_argument("--data-dir", default="../shared/data/math")
    args = ap.parse_args()

    import ray

    from stepprune.stages.generate import GenerateConfig, run

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    common = dict(
        problems="gsm8k",
        data_dir=args.data_dir,
        limit=args.problems,
        model=args.model,
        greedy=True,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        dtype="float32",
    )
    t0 = time.perf_counter()
    local = run(GenerateConfig(out=str(tmp / "local"), **common))
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    t_ray_start = time.perf_counter() - t0
    remote = GenerateConfig(out=str(tmp / "ray"), executor="ray", actors=args.actors, **common)
    ray_summary = run(remote)
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    same = _rows(tmp / "local") == _rows(tmp / "ray")
    g_local, g_ray = local["generation_seconds"], ray_summary["generation_seconds"]
    print(f"problems {args.problems}, {args.max_new_tokens} new tokens, batch {args.batch_size}")
    print(f"local, 1 process:   wall {t_local:7.1f} s   generation {g_local:7.1f} s")
    print(
        f"ray, {args.actors} actors:     wall {t_ray:7.1f} s   generation {g_ray:7.1f} s "
        f"(ray start {t_ray_start:.1f} s)"
    )
    print(f"ray / local: wall {t_ray / t_local:.2f}x   generation {g_ray / g_local:.2f}x")
    print(f"same rows: {same}")


if __name__ == "__main__":
    main()
