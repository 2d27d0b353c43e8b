"""Benchmark (d): top-20 entropy estimate against exact entropy, on real SmolLM2 CoTs.

Input: generations shards made by ``stepprune generate --backend vllm --rescore`` (each row
holds vLLM's top-20 lower-bound estimate in token_entropy_lower and the exact teacher-forced
entropy in token_entropies). Reports the Spearman correlation of step entropies (per
trajectory, then averaged; and pooled) and the overlap of the kappa=0.8 pruned-step sets.
Goals: >= 0.99 and >= 0.95.

    .venv-vllm/bin/python -m stepprune.cli generate --backend vllm --rescore --problems gsm8k \
        --limit 64 --max-new-tokens 384 --out runs/bench-d --set engine_kwargs='{...}'
    .venv/bin/python benchmarks/bench_topk_vs_exact.py runs/bench-d
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from stepprune.schema import GENERATIONS
from stepprune.shards import read_table


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pruned(scores: np.ndarray, kappa: float) -> set[int]:
    k = math.floor(kappa * len(scores) + 1e-9)
    return set(np.lexsort((np.arange(len(scores)), scores))[:k].tolist())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--kappa", type=float, default=0.8)
    args = ap.parse_args()
    rows = read_table(args.shards, GENERATIONS).to_pylist()
    rows = [r for r in rows if r["entropy_source"] == "rescored" and r["n_steps"] >= 3]
    per_traj, pooled_exact, pooled_est, inter, total, tok_err = [], [], [], 0, 0, []
    for r in rows:
        exact = np.asarray(r["token_entropies"])
        est = np.asarray(r["token_entropy_lower"])
        tok_err.append(np.abs(exact - est))
        spans = [(s["token_start"], s["token_end"]) for s in r["steps"]]
        se = np.array([exact[a:b].sum() for a, b in spans])
        sk = np.array([est[a:b].sum() for a, b in spans])
        per_traj.append(spearman(se, sk))
        pooled_exact.extend(se)
        pooled_est.extend(sk)
        pe, pk = pruned(se, args.kappa), pruned(sk, args.kappa)
        inter += len(pe & pk)
        total += len(pe)
    err = np.concatenate(tok_err)
    rho = np.nanmean(per_traj)
    print(f"trajectories      {len(rows)} (>= 3 steps), {sum(r['n_steps'] for r in rows)} steps")
    print(f"token |exact-est| mean {err.mean():.4f}, p99 {np.percentile(err, 99):.4f} nats")
    print(
        f"Spearman (steps)  per-trajectory mean {rho:.4f}, pooled "
        f"{spearman(np.array(pooled_exact), np.array(pooled_est)):.4f}"
    )
    print(
        f"pruned-set overlap at kappa={args.kappa}: {inter / max(total, 1):.4f} "
        f"({inter}/{total} steps)"
    )


if __name__ == "__main__":
    main()
