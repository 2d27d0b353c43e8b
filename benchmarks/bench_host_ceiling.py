"""Benchmark (issue #25): the host's per-token ceiling, with an engine whose speed we choose.

On a GPU, vLLM decodes tens of thousands of tokens per second, and everything stepprune does
per token runs on the host: the top-k records into entropy bounds (``VLLMBackend._completion``),
char offsets and steps (``cot.trajectory.build_row``), grading, shard encoding. This script
replaces the engine by a fake one that returns precomputed completions of ``--lengths`` tokens
(realistic text: GSM8K solution steps separated by blank lines and a boxed answer, each token
with vLLM's 20 top log-probs, in its flat format as the backend asks for them, or as per-token
dicts with ``--dict-logprobs``), either instantly or at ``--rates`` tokens/s, and
runs the generate stage's own loop (``generation.engine.generate_batch`` and ``ShardWriter``).

- host ceiling: tokens / host seconds with an instant engine (per process: this loop is one
  thread), with a profile of where the host time goes;
- at each engine rate: the share of wall time the engine waits on the host, (wall - engine
  time) / wall, since the loop steps the engine only when the host asks for the next row;
- score without the model forward (rows rebuilt from given entropies) and eval's prompt
  building (``build_variants`` and ``distinct_prompts``), in tokens/s.

    .venv/bin/python benchmarks/bench_host_ceiling.py --lengths 1024 8192 32768 --rates 20000 50000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Rec:
    """A vLLM ``Logprob``: what ``topk_matrix`` reads."""

    logprob: float
    rank: int


@dataclass
class Flat:
    """vLLM's ``FlatLogprobs`` (``flat_logprobs=True``, what the vllm backend asks for)."""

    start_indices: list
    end_indices: list
    token_ids: list
    logprobs: list
    ranks: list


def flatten(records: list[dict], ids: list[int]) -> Flat:
    """As vLLM writes them: each position's sampled token first, then its top k (so a sampled
    token inside the top k appears twice)."""
    flat = Flat([], [], [], [], [])
    for entry, sampled in zip(records, ids, strict=True):
        flat.start_indices.append(len(flat.logprobs))
        for token, rec in [(sampled, entry[sampled]), *entry.items()]:
            flat.token_ids.append(token)
            flat.logprobs.append(rec.logprob)
            flat.ranks.append(rec.rank)
        flat.end_indices.append(len(flat.logprobs))
    return flat


@dataclass
class Out:
    token_ids: list
    logprobs: list
    finish_reason: str = "stop"


def solution_steps(data_dir: str) -> list[str]:
    steps = []
    with open(Path(data_dir) / "gsm8k_train.jsonl") as f:
        for line in f:
            answer = json.loads(line)["answer"].split("####")[0]
            steps += [re.sub(r"<<[^>]*>>", "", s).strip() for s in answer.splitlines() if s.strip()]
    return steps


def completion(tok, stop, n: int, steps: list, rng: random.Random, k: int, flat: bool) -> Out:
    """About n tokens of blank-line separated steps, then a boxed answer and the stop token."""
    ids: list[int] = []
    while len(ids) < n - 16:
        ids += tok("\n\n" + rng.choice(steps), add_special_tokens=False)["input_ids"]
    ids = (
        ids[: n - 16] + tok("\n\nThe answer is \\boxed{72}.", add_special_tokens=False)["input_ids"]
    )
    ids.append(stop)
    records = []
    for t in ids:
        others = rng.sample(range(1000, 40000), k - 1)
        lps = sorted((rng.uniform(-12, -2) for _ in others), reverse=True)
        entry = {t: Rec(-0.05, 1)}
        entry.update({o: Rec(lp, r + 2) for r, (o, lp) in enumerate(zip(others, lps, strict=True))})
        records.append(entry)
    return Out(ids, flatten(records, ids) if flat else records)


def fake_engine(model_path: str, outputs: list, rate: float | None, k: int = 20):
    from transformers import AutoTokenizer

    from stepprune.backends.vllm import VLLMBackend

    class FakeEngine(VLLMBackend):
        def __init__(self):  # no vLLM: the host code of VLLMBackend, an engine we time
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.stop_ids = {self.tokenizer.eos_token_id}
            self.topk, self.vocab_size = k, len(self.tokenizer)
            self.engine_seconds = 0.0

        def generate_stream(self, prompts, spec, raw=False):
            for i in range(len(prompts)):
                out = outputs[i % len(outputs)]
                if rate:
                    wait = len(out.token_ids) / rate
                    time.sleep(wait)
                    self.engine_seconds += wait
                # (the code before this benchmark named it _completion: measured the same way)
                convert = getattr(self, "completion", None) or self._completion
                yield i, out if raw else convert(out)

    return FakeEngine()


def run_generate(cfg, engine, problems, out: Path) -> tuple[float, int]:
    from stepprune.cot.trajectory import RunInfo
    from stepprune.generation.engine import generate_batch
    from stepprune.schema import GENERATIONS
    from stepprune.shards import ShardWriter

    info = RunInfo(
        model="fake", backend="vllm", sampling={}, versions={}, step_pattern=cfg.step_pattern
    )
    batch = [(p, 0) for p in problems]
    tokens = 0
    start = time.perf_counter()
    with ShardWriter(out, GENERATIONS, rows_per_shard=1000, flush_seconds=60.0) as writer:
        for rows in generate_batch(cfg, engine, batch, info):
            writer.write(rows)
            writer.maybe_flush()
            tokens += sum(r["n_tokens"] for r in rows)
    return time.perf_counter() - start, tokens


def profile_top(fn, n: int = 12) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    lines = [line for line in buf.getvalue().splitlines() if re.match(r"\s+\d", line)]
    return "\n".join(lines[:n])


def score_host(gen_dir: Path, model_path: str) -> float:
    """Rows rebuilt from given entropies (the score stage minus its forward pass): tokens/s."""
    from stepprune.generation.rescoring import rescore_group
    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    rows = read_table(gen_dir, GENERATIONS).to_pylist()

    class GivenEntropies:  # the Rescorer's interface, without its forward pass
        dtype_name = "float32"

        def score(self, pairs, progress=None):
            return [([0.5] * len(c), [-0.1] * len(c)) for _, c in pairs]

    rescorer = GivenEntropies()
    start = time.perf_counter()
    rescore_group(rows, rescorer, "fake")
    return sum(r["n_tokens"] for r in rows) / (time.perf_counter() - start)


def eval_prompts_host(gen_dir: Path, model_path: str) -> float:
    """eval's answer prompts for 3 strategies x 3 kappas (built, deduplicated, tokenized)."""
    from transformers import AutoTokenizer

    from stepprune.evaluation.answer_prompts import build_variants, distinct_prompts
    from stepprune.shards import shard_files
    from stepprune.stages.eval import EvalConfig

    cfg = EvalConfig(
        input=str(gen_dir), kappas=[0.0, 0.5, 0.8], strategies=["low", "high", "token"]
    )
    tok = AutoTokenizer.from_pretrained(model_path)
    files = shard_files(gen_dir)
    start = time.perf_counter()
    variants = build_variants(files, cfg, cfg.specs(), tok, set(), "fake")
    distinct_prompts(variants, tok, None)
    seconds = time.perf_counter() - start
    return int(variants["original_thinking_tokens"].sum()) / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="whose tokenizer (default: the embedded SmolLM2)")
    ap.add_argument("--data-dir", default="../shared/data/math")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--rates", type=float, nargs="+", default=[20000, 50000])
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per measurement")
    ap.add_argument("--dict-logprobs", action="store_true", help="vLLM's per-token dicts")
    a = ap.parse_args()
    from transformers import AutoTokenizer

    from stepprune.data.load import Problem
    from stepprune.models import resolve_model
    from stepprune.stages.generate import GenerateConfig

    model = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(model)
    steps, rng = solution_steps(a.data_dir), random.Random(0)
    cfg = GenerateConfig(model=model, backend="vllm")
    for n in a.lengths:
        flat = not a.dict_logprobs
        outputs = [completion(tok, tok.eos_token_id, n, steps, rng, 20, flat) for _ in range(2)]
        count = max(2, a.tokens // n)
        problems = [Problem(f"p{i}", "bench", f"What is {i} + {i}?", "72") for i in range(count)]
        with tempfile.TemporaryDirectory() as tmp:
            measure(n, cfg, model, outputs, problems, a.rates, Path(tmp))


def measure(n: int, cfg, model: str, outputs: list, problems: list, rates, tmp: Path) -> None:
    pad = " " * 8
    engine = fake_engine(model, outputs, None)
    seconds, tokens = run_generate(cfg, engine, problems, tmp / "g0")
    print(f"{n:6d}-token CoTs: host ceiling {tokens / seconds:,.0f} tok/s ({len(problems)} rows)")
    for rate in rates:
        engine = fake_engine(model, outputs, rate)
        wall, _ = run_generate(cfg, engine, problems, tmp / f"g{rate:.0f}")
        wait = 100 * (wall - engine.engine_seconds) / wall
        print(f"{pad}engine at {rate:,.0f} tok/s: the engine waits {wait:.1f} % of the time")
    print(f"{pad}score without the forward: {score_host(tmp / 'g0', model):,.0f} tok/s")
    rate = eval_prompts_host(tmp / "g0", model)
    print(f"{pad}eval prompt building: {rate:,.0f} thinking tok/s")
    engine = fake_engine(model, outputs, None)
    top = profile_top(lambda: run_generate(cfg, engine, problems, tmp / "gp"))
    print(f"{pad}where host time goes (own time, top calls):\n{top}")


if __name__ == "__main__":
    main()
