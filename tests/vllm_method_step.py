"""Run in .venv-vllm by tests/test_grpo_vllm.py: one GRPO step of a method preset with colocated
vLLM rollouts, built from the grpo stage's own parts, recording what the RL layer saw.

Usage: ``python vllm_method_step.py MODEL PROBLEMS OUT METHOD RESULT.json``. The result holds,
per rollout: its question id, answer, completion text and ids, every reward column after the
method's ``on_rewards`` hooks, and the advantage the loss used; plus the per-question state.
"""

from __future__ import annotations

import json
import sys

from vllm_sync_run import ARGS as SYNC_ARGS
from vllm_sync_run import ids_mod7  # joins every method's rewards (see its docstring)

from stepprune.rl.trainer import RLTrainer
from stepprune.stages.grpo import GRPOStageConfig, _build_parts, grpo_config
from stepprune.train.grpo_data import build_dataset, training_problems

# vllm_sync_run's settings with 2 problems x 4 rollouts a step.
ARGS = {**SYNC_ARGS, "per_device_train_batch_size": 8, "learning_rate": 1e-3}
KWARGS = {"require_think": False}
REWARD_KWARGS = {
    "se": {},
    "eg-compress": {"eg_compress": {"max_tokens": 12, **KWARGS}},
    "ceeh": {"ceeh_correctness": KWARGS},
}


class Recording(RLTrainer):
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.rows = [
            {
                "question": str(x[self.question_id_column]),
                "answer": x["gold_answer"],
                "text": self.processing_class.decode(ids),
                "ids": list(ids),
                "rewards": [float(r) for r in rewards[i].tolist()],
            }
            for i, (x, ids) in enumerate(zip(inputs, completion_ids_list, strict=True))
        ]
        return rewards

    def _compute_loss(self, model, inputs):
        ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        for row, keep, advantage in zip(ids, mask, inputs["advantages"], strict=True):
            self.loss_rows.append({"ids": row[keep.bool()].tolist(), "advantage": float(advantage)})
        return super()._compute_loss(model, inputs)


def main() -> None:
    model, problems, out, method, result = sys.argv[1:6]
    cfg = GRPOStageConfig(
        problems=problems,
        out=out,
        model=model,
        method=method,
        grpo_args=ARGS,
        reward_kwargs=REWARD_KWARGS[method],
        id_field="id",
    )
    args = grpo_config(cfg)
    model_path, tokenizer, rewards, extensions = _build_parts(cfg, args)
    dataset = build_dataset(training_problems(problems, id_field="id"), cfg.prompt_template, None)
    trainer = Recording(
        model=model_path,
        reward_funcs=[*rewards, ids_mod7],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        extensions=extensions,
    )
    trainer.loss_rows = []
    trainer.train()
    record = dict(
        rows=trainer.rows,
        loss_rows=trainer.loss_rows,
        reward_names=list(trainer.reward_func_names),
        reward_weights=trainer.reward_weights.tolist(),
        scale_rewards=args.scale_rewards,
        state=trainer.rl_state(),
        sync=type(trainer.vllm_generation).__name__,
    )
    with open(result, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
