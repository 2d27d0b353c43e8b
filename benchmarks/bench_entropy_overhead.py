"""Benchmark (a): cost of exact entropy capture against plain ``generate`` (goal: <= 5%).

Same model (embedded SmolLM2-135M-Instruct), same prompts, greedy, same number of new tokens
(EOS suppressed so both runs decode exactly ``--new-tokens`` steps). Runs alternate, best of N.

    .venv/bin/python benchmarks/bench_entropy_overhead.py --batch 8 --new-tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from stepprune.backends.hf import EntropyRecorder
from stepprune.models import resolve_model

PROMPTS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 4 boxes?",
    "Sara read 23 pages on Monday and 41 on Tuesday. How many pages did she read?",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        for p in (PROMPTS * args.batch)[: args.batch]
    ]
    batch = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    cfg = GenerationConfig(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id or tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )

    def once(with_entropy: bool) -> float:
        procs = [EntropyRecorder(args.new_tokens)] if with_entropy else []
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch, generation_config=cfg, logits_processor=procs)
        return time.perf_counter() - start

    once(True)  # warm-up
    plain, exact = [], []
    for _ in range(args.repeats):
        plain.append(once(False))
        exact.append(once(True))
    p, e = min(plain), min(exact)
    toks = args.batch * args.new_tokens
    print(f"model            {path}")
    print(f"batch x tokens   {args.batch} x {args.new_tokens}, threads {torch.get_num_threads()}")
    print(f"plain generate   {p:.2f} s  ({toks / p:.1f} tok/s)")
    print(f"with entropy     {e:.2f} s  ({toks / e:.1f} tok/s)")
    print(f"overhead         {100 * (e / p - 1):+.1f} %  (ratio {e / p:.3f})")


if __name__ == "__main__":
    main()
