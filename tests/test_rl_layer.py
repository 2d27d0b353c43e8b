"""The RL layer on the tiny model: advantage rules replace TRL's, and the update is recomputed by
hand from the rollouts the trainer saw (SGD, one step, so the update is -lr * gradient)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_ARGS, biased_copy

from stepprune.rl.eg import PositiveAbsolute, RolloutStats
from stepprune.rl.trainer import RLTrainer

SGD = dict(optim="sgd", learning_rate=0.05, lr_scheduler_type="constant", max_grad_norm=0.0)


class FixedReward:
    """Returns the given values, one per rollout, in TRL's generation order."""

    def __init__(self, values, name: str = "fixed"):
        self.values, self.__name__ = list(values), name

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        return self.values[: len(completions)]


class Recording(RLTrainer):
    """Keeps every batch the loss saw."""

    def _compute_loss(self, model, inputs):
        self.seen = [*getattr(self, "seen", []), {k: _copy(v) for k, v in inputs.items()}]
        return super()._compute_loss(model, inputs)


def _copy(value):
    return value.clone() if torch.is_tensor(value) else value


@pytest.fixture(scope="module")
def eos_model(tiny_model_dir, tmp_path_factory):
    return biased_copy(tiny_model_dir, tmp_path_factory.mktemp("eos"))


def train_one_step(model_dir, out, reward_funcs, extensions, **args):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    rows = [
        {"prompt": [{"role": "user", "content": f"{i} apples?"}], "problem_id": f"q{i}"}
        for i in range(4)
    ]
    settings = {**TINY_ARGS, **SGD, "max_steps": 1, "save_strategy": "no", **args}
    trainer = Recording(
        model=str(model_dir),
        reward_funcs=reward_funcs,
        args=GRPOConfig(output_dir=str(out), **settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        extensions=extensions,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return trainer, before, after


def hand_update(model_dir, batch, weights, lr, normaliser):
    """-lr * grad of -(sum_i w_i sum_t log p(y_it)) / normaliser, each rollout unpadded."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    total = torch.zeros(())
    for i, w in enumerate(weights):
        if w == 0:
            continue
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        ids = torch.cat([prompt, completion]).unsqueeze(0)
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)[torch.arange(len(completion)), completion]
        total = total + w * logp.sum()
    (-total / normaliser).backward()
    return {n: -lr * p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "cispo", "grpo", "dr_grpo"])
def test_positive_only_update_equals_the_hand_update_from_positive_rollouts(
    eos_model, tmp_path, loss_type
):
    values, scale = [0.8, 0.0, 0.4, 0.0], 2.0
    trainer, before, after = train_one_step(
        eos_model,
        tmp_path,
        [FixedReward(values)],
        [PositiveAbsolute(scale=scale), RolloutStats()],
        loss_type=loss_type,
        # CISPO clamps the ratio at epsilon_high itself (TRL's default 0.2 would scale the
        # on-policy ratio 1 down to 0.2): a bound above 1 leaves the update unclipped
        **({"epsilon_high": 5.0} if loss_type == "cispo" else {}),
    )
    batch = trainer.seen[0]
    adv = batch["advantages"].tolist()
    # the advantages in use are scale * R for R > 0, else 0, in TRL's (shuffled) order ...
    assert sorted(adv) == pytest.approx(sorted(scale * v for v in values))
    # ... and the logged ones are the same values in generation order
    assert list(trainer._logs["advantages"]) == pytest.approx([scale * v for v in values])
    zero = [a == 0 for a in adv]
    loss_mask = batch["completion_mask"] * batch["tool_mask"]  # what TRL's loss counts
    assert all(loss_mask[i].sum() == 0 for i in range(4) if zero[i])
    assert all(batch["completion_mask"][i].sum() > 0 for i in range(4))  # attention intact
    n_pos = int(loss_mask.sum())  # only positive rollouts count
    assert int(batch["num_items_in_batch"]) == n_pos
    # The token-normalised losses divide by the positive rollouts' tokens alone (exact); grpo
    # averages per-rollout token means over all 4 rollouts, dr_grpo divides by 4 x the cap
    # (16): there the zero rollouts still dilute the update, as rl/eg.py says.
    weights, normaliser = adv, n_pos
    if loss_type == "grpo":
        lengths = batch["completion_mask"].sum(1).tolist()
        weights, normaliser = [a / n for a, n in zip(adv, lengths, strict=True)], 4
    elif loss_type == "dr_grpo":
        normaliser = 4 * 16
    expected = hand_update(eos_model, batch, weights, SGD["learning_rate"], normaliser)
    for name, delta in expected.items():
        torch.testing.assert_close(after[name] - before[name], delta, rtol=2e-3, atol=2e-7)
    assert any(delta.abs().max() > 1e-5 for delta in expected.values())
    logged = trainer.state.log_history[0]
    assert logged["eg/frac_positive"] == 0.5 and logged["rollouts/frac_positive_reward"] == 0.5
    assert logged["advantages/mean"] == pytest.approx(scale * sum(values) / 4)
    # entropy over every rollout, not only the ones in the loss
    assert logged["entropy/all_rollouts"] > 0


def test_zero_rewards_count_in_the_normaliser_only_when_asked(eos_model, tmp_path):
    values = [0.8, 0.0, 0.4, 0.0]
    trainer, before, after = train_one_step(
        eos_model, tmp_path, [FixedReward(values)], [PositiveAbsolute(zero_in_normaliser=True)]
    )
    batch = trainer.seen[0]
    n_all = int(batch["completion_mask"].sum())
    assert int(batch["num_items_in_batch"]) == n_all  # every rollout's tokens, none masked
    expected = hand_update(eos_model, batch, batch["advantages"].tolist(), 0.05, n_all)
    for name, delta in expected.items():
        torch.testing.assert_close(after[name] - before[name], delta, rtol=2e-3, atol=2e-7)


def test_all_zero_rewards_change_no_parameter(eos_model, tmp_path):
    zeros = [FixedReward([0.0] * 4)]
    _, before, after = train_one_step(eos_model, tmp_path, zeros, [PositiveAbsolute()])
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_explore_keeps_trl_relative_advantages(eos_model, tmp_path):
    values = [1.0, 0.0, 0.5, 0.0]
    rewards = [FixedReward(values)]
    trainer, _, _ = train_one_step(eos_model, tmp_path, rewards, [RolloutStats(max_tokens=8)])
    r = torch.tensor(values)
    expected = ((r - r.mean()) / (r.std() + 1e-4)).tolist()  # unbiased std, as TRL's nanstd
    assert list(trainer._logs["advantages"]) == pytest.approx(expected, abs=1e-6)
    assert sorted(trainer.seen[0]["advantages"].tolist()) == pytest.approx(sorted(expected))
    assert trainer.state.log_history[0]["advantages/mean"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= trainer.state.log_history[0]["rollouts/frac_over_L"] <= 1.0


def test_report_entropy_is_over_every_rollout_where_logged():
    from stepprune.rl.report import step_logs

    history = [
        {"reward": 1.0, "entropy": 0.1, "entropy/all_rollouts": 0.3, "step": 1},
        {"loss": 0.5, "step": 1},  # not a step entry (no reward)
        {"reward": 0.0, "entropy": 0.2, "step": 2},  # older logs: TRL's own entropy stays
    ]
    assert [(h["step"], h["entropy"]) for h in step_logs(history)] == [(1, 0.3), (2, 0.2)]
    assert history[0]["entropy"] == 0.1  # the history itself is left alone
