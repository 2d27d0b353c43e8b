"""Benchmark: a GRPO step through stepprune's RL layer against TRL's plain GRPOTrainer (goal for
``--method se``: at most 5 % longer).

Same model (embedded SmolLM2-135M-Instruct unless --model), same 8 MAWPS problems, batch, seed
and rewards (SE's four). Rounds alternate the trainers, each a fresh run of --steps optimizer
steps; the per-step wall time comes from a callback, the first step of every run is dropped
(warm-up), and each trainer's figure is the median over all its remaining steps. The layer with
active extensions (EG's compress, CEEH's ME) is timed too, for information.

    .venv/bin/python benchmarks/bench_grpo_overhead.py --rounds 3 --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from transformers import TrainerCallback

ARGS = dict(
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=64,
    temperature=1.0,
    learning_rate=1e-6,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    bf16=False,
    use_cpu=True,
    disable_tqdm=True,
)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def one_run(kind: str, model: str, dataset, tokenizer, steps: int) -> list[float]:
    from trl import GRPOConfig, GRPOTrainer

    from stepprune.rl.methods import build_extensions, method_grpo_args
    from stepprune.rl.registry import PAPER_REWARDS, build_rewards
    from stepprune.rl.trainer import RLTrainer

    method = {"trl": "se", "se": "se", "eg": "eg-compress", "ceeh": "ceeh"}[kind]
    names = list(PAPER_REWARDS) if method == "se" else None
    if method == "eg-compress":
        names = ["eg_compress"]
    elif method == "ceeh":
        names = ["ceeh_correctness", "ceeh_length"]
    rewards = build_rewards(names, tokenizer=tokenizer)
    extra = {} if kind == "trl" else {"extensions": build_extensions(method, {}, rewards)}
    grpo_args = {**method_grpo_args(method, {}), **ARGS} if method != "se" else dict(ARGS)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        cls = GRPOTrainer if kind == "trl" else RLTrainer
        trainer = cls(
            model=model,
            reward_funcs=rewards,
            args=GRPOConfig(output_dir=out, max_steps=steps, seed=0, **grpo_args),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
            **extra,
        )
        trainer.train()
    return timer.times[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--data-dir", default="../shared/data/math")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from stepprune.models import resolve_model
    from stepprune.train.grpo_data import build_dataset, training_problems

    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    problems = training_problems("mawps_singleop", data_dir=args.data_dir, limit=8)
    dataset = build_dataset(problems, "{problem}\n\nPut your final answer within \\boxed{{}}.")
    kinds = ("trl", "se", "eg", "ceeh")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else reversed(kinds):
            times[kind] += one_run(kind, model, dataset, tokenizer, args.steps)
    base = statistics.median(times["trl"])
    print(f"GRPO step, median over {len(times['trl'])} steps each ({args.rounds} rounds):")
    for kind in kinds:
        med = statistics.median(times[kind])
        label = {"trl": "TRL GRPOTrainer", "se": "RLTrainer --method se"}.get(kind, kind)
        print(f"  {label:<24} {med:7.3f} s   ratio {med / base:.3f}")


if __name__ == "__main__":
    main()
