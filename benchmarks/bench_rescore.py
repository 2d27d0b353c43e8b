"""Benchmark: exact rescoring after vLLM, before and after issue #18 (goal: rescoring <= 1.0x the
generation time on this CPU; entropies within a stated tolerance of float32, step-entropy
Spearman >= 0.99).

One process, in order: (1) vLLM generates --problems GSM8K test problems greedily (the time of
plain ``generate --no-rescore``, engine start excluded); (2) the old rescoring: float32, one
completion per forward pass, the engine still alive (what ``generate --rescore`` did); (3) the
engine is shut down and the new rescoring runs in the engine's dtype, batched to a token budget.
Then the two sets of entropies are compared token by token and step by step. Run alone, in the
vLLM venv:

    VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \\
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/bench_rescore.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ranks(x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    out[np.argsort(x, kind="stable")] = np.arange(len(x))
    return out


def spearman(a, b) -> float:
    if len(a) < 2:
        return float("nan")
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--data-dir", default="../shared/data/math")
    args = ap.parse_args()

    from stepprune.backends import SamplingSpec
    from stepprune.backends.rescore import Rescorer
    from stepprune.backends.vllm import VLLMBackend
    from stepprune.cot.trajectory import RunInfo
    from stepprune.data.load import load_problems
    from stepprune.data.prompts import render_prompt
    from stepprune.models import resolve_model
    from stepprune.stages.generate import GenerateConfig

    model = resolve_model("qwen2.5-coder-0.5b-instruct")
    engine = {"enforce_eager": True, "max_model_len": 2048, "max_num_batched_tokens": 16384}
    backend = VLLMBackend(model, dtype="bfloat16", enable_prefix_caching=True, **engine)
    problems = load_problems("gsm8k", data_dir=args.data_dir, limit=args.problems)
    cfg = GenerateConfig(problems="gsm8k")
    prompts = [render_prompt(backend.tokenizer, cfg, p.problem) for p in problems]
    spec = SamplingSpec(greedy=True, max_new_tokens=args.max_new_tokens)
    t0 = time.perf_counter()
    comps = backend.generate([ids for _, ids in prompts], spec)
    t_gen = time.perf_counter() - t0
    pairs = [(ids, c.token_ids) for (_, ids), c in zip(prompts, comps, strict=True)]
    n_tok = sum(len(c.token_ids) for c in comps)

    old = Rescorer(model, dtype="float32", token_budget=1)  # one completion per pass
    t0 = time.perf_counter()
    old_scores = old.score(pairs)
    t_old = time.perf_counter() - t0
    del old

    dtype = backend.dtype
    backend.close()
    t0 = time.perf_counter()
    new = Rescorer(model, dtype=dtype)
    new_scores = new.score(pairs)
    t_new = time.perf_counter() - t0

    info = RunInfo(
        model="q", backend="vllm", sampling={}, versions={}, step_pattern=cfg.step_pattern
    )
    tokenizer = _tok(model)
    diffs, rho, pooled_a, pooled_b = [], [], [], []
    for p, (text, ids), c, (e_old, _), (e_new, _) in zip(
        problems, prompts, comps, old_scores, new_scores, strict=True
    ):
        diffs.extend(np.abs(np.subtract(e_old, e_new)))
        spans = _spans(tokenizer, c, p, text, ids, info, backend.stop_ids)
        a, b = [sum(e_old[s:t]) for s, t in spans], [sum(e_new[s:t]) for s, t in spans]
        pooled_a += a
        pooled_b += b
        if len(spans) >= 3:
            rho.append(spearman(a, b))
    mean_ent = float(np.mean([e for s in old_scores for e in s[0]]))
    print(f"{len(comps)} GSM8K problems, {n_tok} completion tokens")
    print(f"generate (vLLM, bf16, greedy, engine start excluded)   {t_gen:8.1f} s")
    print(
        f"rescore before: fp32, 1 per pass, engine alive       {t_old:8.1f} s  "
        f"{t_old / t_gen:.2f}x generation"
    )
    print(
        f"rescore after: {dtype}, batched, engine closed     {t_new:8.1f} s  "
        f"{t_new / t_gen:.2f}x generation (model load included)"
    )
    print(f"speed-up of the rescoring pass                        {t_old / t_new:8.2f}x")
    print(
        f"mean |fp32 - {dtype}| token entropy {np.mean(diffs):.4f} nats "
        f"(p99 {np.quantile(diffs, 0.99):.4f}; mean entropy {mean_ent:.3f})"
    )
    print(
        f"step-entropy Spearman, trajectories with >= 3 steps (n={len(rho)}): "
        f"mean {np.mean(rho):.4f}, min {np.min(rho):.4f}; pooled {spearman(pooled_a, pooled_b):.4f}"
    )


def _tok(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _spans(tokenizer, comp, problem, text, ids, info, stop_ids) -> list[tuple[int, int]]:
    from stepprune.cot.trajectory import build_row

    row = build_row(problem, 0, text, ids, comp, tokenizer, stop_ids, info, 0)
    return [(s["token_start"], s["token_end"]) for s in row["steps"]]


if __name__ == "__main__":
    main()
