"""A GRPO step with vLLM rollouts against one with transformers rollouts (issue #23).

Same model (Qwen2.5-Coder-0.5B-Instruct by default), problems, batch, rollouts, max tokens and
seed; each engine in a fresh process. Per optimizer step: TRL's ``step_time``, split into
generation (``_generate_single_turn``: rollouts, and for vLLM the weight sync before them) and
the rest (rewards, the loss pass and the optimizer). The first step is a warm-up and dropped;
medians of the others. Run it alone, in .venv-vllm:

    .venv-vllm/bin/python benchmarks/bench_grpo_vllm.py --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = dict(
    per_device_train_batch_size=8,
    num_generations=4,
    temperature=1.0,
    learning_rate=1e-5,
    logging_steps=1,
    save_strategy="no",
    bf16=False,
    use_cpu=True,
    report_to="none",
    disable_tqdm=True,
    model_init_kwargs={"dtype": "float32"},
)
VLLM = dict(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=1024)


def one_engine(model, engine, steps, tokens, limit, data_dir, out) -> dict:
    from stepprune.rl.trainer import RLTrainer
    from stepprune.stages.grpo import GRPOStageConfig, _build_parts, grpo_config
    from stepprune.train.grpo_data import build_dataset, training_problems

    class Timed(RLTrainer):
        generation: list[float] = []

        def _generate_single_turn(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                self.generation.append(time.perf_counter() - start)

    grpo_args = {**ARGS, "max_steps": steps, "max_completion_length": tokens}
    if engine == "vllm":
        grpo_args.update(VLLM)
    cfg = GRPOStageConfig(
        problems="gsm8k_train",
        out=out,
        model=model,
        method="se",
        grpo_args=grpo_args,
        limit=limit,
        data_dir=data_dir,
    )
    args = grpo_config(cfg)
    model_path, tokenizer, rewards, extensions = _build_parts(cfg, args)
    problems = training_problems(cfg.problems, data_dir=data_dir, limit=limit)
    trainer = Timed(
        model=model_path,
        reward_funcs=rewards,
        args=args,
        train_dataset=build_dataset(problems, cfg.prompt_template),
        processing_class=tokenizer,
        extensions=extensions,
    )
    trainer.train()
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "step_time" in h]
    return {"step": step_times, "generation": Timed.generation, "mean_length": lengths}


def report(results: dict) -> None:
    print(f"{'engine':<14}{'step s':>9}{'generate s':>12}{'rest s':>9}{'tokens/rollout':>16}")
    for engine, r in results.items():
        step = statistics.median(r["step"][1:])
        gen = statistics.median(r["generation"][1:])
        length = statistics.median(r["mean_length"][1:])
        print(f"{engine:<14}{step:>9.1f}{gen:>12.1f}{step - gen:>9.1f}{length:>16.1f}")
    if {"vllm", "transformers"} <= set(results):
        med = {e: statistics.median(r["step"][1:]) for e, r in results.items()}
        print(f"step time ratio transformers / vllm: {med['transformers'] / med['vllm']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--data-dir", default="../shared/data/math")
    p.add_argument("--engine", choices=["vllm", "transformers"])  # internal: one engine
    p.add_argument("--json")
    a = p.parse_args()
    if a.engine:
        with tempfile.TemporaryDirectory() as out:
            got = one_engine(a.model, a.engine, a.steps, a.tokens, a.limit, a.data_dir, out)
        with open(a.json, "w") as f:
            json.dump(got, f)
        return
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    results = {}
    for engine in ("transformers", "vllm"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--engine", engine, "--json", f.name]
            cmd += ["--model", a.model, "--steps", str(a.steps), "--tokens", str(a.tokens)]
            cmd += ["--limit", str(a.limit), "--data-dir", a.data_dir]
            subprocess.run(cmd, env=env, check=True)
            results[engine] = json.loads(Path(f.name).read_text())
    print(json.dumps(results))
    report(results)


if __name__ == "__main__":
    main()
