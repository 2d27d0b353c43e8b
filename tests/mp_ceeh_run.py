"""Run under ``accelerate launch`` by tests/test_multiprocess.py: three steps of CEEH GRPO on the
tiny model in which one prompt's rollouts span both processes; every rank writes its final
per-question state and the gathered batches it saw to ``OUT/rank<i>.json``."""

import json
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig

from stepprune.process_group import end_process_group
from stepprune.rl.ceeh import CEEH
from stepprune.rl.trainer import RLTrainer


class Parity:
    """A correctness reward that varies: 1 for an even completion length, else -0.5."""

    __name__ = "parity"

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        return [1.0 if len(ids) % 2 == 0 else -0.5 for ids in completion_ids]


class Zero:
    __name__ = "ceeh_length"

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        return [None] * len(completions)


class Recording(RLTrainer):
    def _calculate_rewards(self, *args, **kwargs):
        rewards = super()._calculate_rewards(*args, **kwargs)
        b = self._rollouts
        self.batches = [*getattr(self, "batches", [])]
        self.batches.append(
            {
                "ids": b.question_ids,
                "correct": b.column("parity").tolist(),
                "lengths": b.lengths.tolist(),
            }
        )
        return rewards


def main(model: str, out: str) -> None:
    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    rows = [
        {"prompt": [{"role": "user", "content": f"{i} apples?"}], "problem_id": f"q{i}"}
        for i in range(9)
    ]
    args = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=6,  # 12 rollouts a step, 3 prompts of 4: one spans both ranks
        num_generations=4,
        max_completion_length=12,
        temperature=1.0,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Recording(
        model=model,
        reward_funcs=[Parity(), Zero()],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        extensions=[CEEH(mode="me", correctness="parity", length="ceeh_length")],
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    record = {
        "state": trainer.rl_state(),
        "batches": trainer.batches,
        "world": trainer.accelerator.num_processes,
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    # As every script under accelerate launch should, once its trainers are gone (issue #29).
    end_process_group()
