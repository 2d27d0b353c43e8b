"""Run in .venv-vllm by tests/test_grpo_vllm.py: one GRPO step with colocated vLLM rollouts,
then the log-probs the engine assigns to a fixed completion, against the trained policy's own.

Usage: ``python vllm_sync_run.py MODEL OUT_DIR full|lora|skip RESULT.json``. The engine's
log-probs come from vLLM's ``prompt_logprobs`` over prompt + completion; the policy's from a
transformers forward of ``trainer.model`` (with LoRA: base plus adapters, unmerged).
"""

from __future__ import annotations

import json
import sys

import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig

from stepprune.rl.trainer import RLTrainer

ARGS = dict(
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=12,
    temperature=1.0,
    optim="sgd",
    learning_rate=0.5,  # a step large enough to move every log-prob well past the tolerance
    lr_scheduler_type="constant",
    max_grad_norm=0.0,
    logging_steps=1,
    save_strategy="no",
    bf16=False,
    use_cpu=True,
    report_to="none",
    disable_tqdm=True,
    max_steps=1,
    use_vllm=True,
    vllm_mode="colocate",
    vllm_gpu_memory_utilization=0.1,
    vllm_max_model_length=128,
)


def ids_mod7(completions=None, completion_ids=None, **kwargs):
    """A reward that differs between distinct samples (r = sum(ids) mod 7), where a random tiny
    model's task rewards would all be equal: groups get non-zero advantages."""
    return [float(sum(ids) % 7) for ids in completion_ids]


def engine_logprobs(trainer, ids: list[int], start: int) -> list[float]:
    from vllm import SamplingParams

    llm = trainer.vllm_generation.llm
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
    out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
    return [out.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))]


def policy_logprobs(trainer, ids: list[int], start: int) -> list[float]:
    model = trainer.model
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return [logp[i - 1, ids[i]].item() for i in range(start, len(ids))]


def main() -> None:
    model_dir, out, mode, result = sys.argv[1:5]
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    rows = [{"prompt": f"{i} apples and", "problem_id": f"q{i}"} for i in range(4)]
    peft = None
    if mode == "lora":
        from peft import LoraConfig

        peft = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear")
    trainer = RLTrainer(
        model=model_dir,
        reward_funcs=[ids_mod7],
        args=GRPOConfig(output_dir=out, **ARGS),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft,
    )
    prompt = tok("3 apples and")["input_ids"]
    completion = tok(" 4 pears make 7")["input_ids"]
    if mode == "skip":
        completion = completion[:2] + [tok.convert_tokens_to_ids("[SKIP]")] + completion[2:]
    ids, start = prompt + completion, len(prompt)
    before = engine_logprobs(trainer, ids, start)
    before_policy = policy_logprobs(trainer, ids, start)
    trainer.train()
    trainer.vllm_generation.sync_weights()  # TRL syncs before the next rollout; do it now
    after = engine_logprobs(trainer, ids, start)
    after_policy = policy_logprobs(trainer, ids, start)
    record = dict(
        before=before,
        before_policy=before_policy,
        after=after,
        after_policy=after_policy,
        completion=completion,
        sync=type(trainer.vllm_generation).__name__,
        sync_seconds=getattr(trainer.vllm_generation, "seconds", []),
        engine_dtype=str(trainer.vllm_generation.llm.llm_engine.model_config.dtype),
    )
    with open(result, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
