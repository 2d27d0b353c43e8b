"""Benchmark (b): peak memory against max_new_tokens (goal: flat entropy-capture cost).

Each setting runs in a fresh process and reports its peak RSS. Modes: ``plain`` (no entropy),
``stepprune`` (the hf backend's EntropyRecorder) and ``scores`` (transformers' output_logits,
the naive way, which keeps every [batch, vocab] logit row). The KV cache grows with length in
every mode; what matters is the difference to ``plain``.

    .venv/bin/python benchmarks/bench_generate_memory.py --batch 4 --lengths 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from stepprune.backends.hf import EntropyRecorder
from stepprune.models import resolve_model
mode, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = resolve_model(None)
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
text = tok.apply_chat_template([{"role": "user", "content": "Count slowly from one."}],
                               add_generation_prompt=True, tokenize=False)
enc = tok([text] * batch, return_tensors="pt")
cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                       output_logits=(mode == "scores"), return_dict_in_generate=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.inference_mode():
    out = model.generate(**enc, generation_config=cfg,
                         logits_processor=[EntropyRecorder(n)] if mode == "stepprune" else [])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "n": n, "peak_mb": peak / 1024, "loaded_mb": base / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--modes", nargs="+", default=["plain", "stepprune", "scores"])
    args = ap.parse_args()
    rows = {}
    for n in args.lengths:
        for mode in args.modes:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(n), str(args.batch)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[(mode, n)] = r["peak_mb"] - r["loaded_mb"]
    print(f"peak RSS growth during generate (MB above the loaded model), batch {args.batch}")
    print("max_new_tokens " + " ".join(f"{m:>10}" for m in args.modes) + "  stepprune-plain")
    for n in args.lengths:
        cells = " ".join(f"{rows[(m, n)]:10.0f}" for m in args.modes)
        extra = rows.get(("stepprune", n), 0) - rows.get(("plain", n), 0)
        print(f"{n:14d} {cells}  {extra:+10.0f}")


if __name__ == "__main__":
    main()
