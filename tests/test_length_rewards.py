"""The length-reward methods (rl/length_rewards.py): each formula against hand values, the
group rewards filled in from a gathered batch, the presets' wiring, and one real GRPO step whose
advantages equal those recomputed by hand from the rollouts the loss saw."""

from __future__ import annotations

import pytest
import torch
from conftest import biased_copy
from test_rl_layer import train_one_step

from stepprune.rl.hooks import RolloutBatch
from stepprune.rl.length_rewards import (
    GroupLength,
    KimiLengthReward,
    ShorterBetterLengthReward,
    SoftOverlongReward,
    ThinkPruneReward,
    kimi_length,
    sample_optimal_length,
    shorterbetter_length,
)


def test_kimi_by_hand_and_against_open_r1s_loop():
    # lengths 100, 200, 300: lambda 0.5, 0, -0.5; the wrong 200 keeps min(0, 0) = 0
    assert kimi_length([100, 200, 300], [True, False, True]) == [0.5, 0.0, -0.5]
    # a wrong short rollout gets min(0, 0.5) = 0, not a bonus
    assert kimi_length([100, 300], [False, True]) == [0.0, -0.5]
    assert kimi_length([50, 50, 50], [True, False, True]) == [0.0, 0.0, 0.0]
    lengths, correct = [12, 40, 7, 33, 21], [True, False, False, True, True]
    lo, hi = min(lengths), max(lengths)  # open-r1's len_reward loop, written out again
    expected = []
    for n, ok in zip(lengths, correct, strict=True):
        lam = 0.5 - (n - lo) / (hi - lo)
        expected.append(lam if ok else min(0, lam))
    assert kimi_length(lengths, correct) == pytest.approx(expected)


def test_shorterbetter_sol_and_reward_by_hand():
    lengths, correct = [120, 80, 200, 60], [True, True, False, False]
    assert sample_optimal_length(lengths, correct) == 80  # the shortest *correct* one
    assert shorterbetter_length(lengths, correct) == pytest.approx([-0.04, 0.0, -0.12, -0.02])
    # none correct: SOL is the group's mean length, 115
    assert sample_optimal_length(lengths, [False] * 4) == 115
    assert shorterbetter_length([100, 130], [False, False], beta=0.01) == pytest.approx(
        [-0.15, -0.15]
    )


def boxed_ids(n: int, finished: bool = True) -> list[int]:
    return [5] * (n - 1) + [0 if finished else 5]


def test_thinkprune_needs_a_correct_finished_answer_within_l():
    reward = ThinkPruneReward(max_tokens=5, require_think=False)
    reward.stop_ids = frozenset({0})
    texts = ["so \\boxed{8}", "so \\boxed{8}", "so \\boxed{8}", "so \\boxed{9}"]
    ids = [boxed_ids(5), boxed_ids(6), boxed_ids(4, finished=False), boxed_ids(3)]
    got = reward(completions=texts, completion_ids=ids, gold_answer=["8"] * 4)
    # within L and right; one token over L; cut off (no final answer); wrong
    assert got == [1.0, 0.0, 0.0, 0.0]


def test_soft_overlong_is_trls_formula():
    reward = SoftOverlongReward(max_completion_len=10, soft_punish_cache=4)
    lengths = [3, 6, 7, 9, 10, 11]
    got = reward(completions=["x"] * 6, completion_ids=[[1] * n for n in lengths])
    # 0 up to L_max - cache = 6, then (6 - n) / 4 up to 10, then -1
    assert got == pytest.approx([0.0, 0.0, -0.25, -0.75, -1.0, -1.0])
    with pytest.raises(ValueError, match="soft_punish_cache"):
        SoftOverlongReward(max_completion_len=4, soft_punish_cache=8)


def gathered(ids, correct, lengths, step=0) -> RolloutBatch:
    rewards = torch.tensor([[1.0 if c else 0.0, float("nan")] for c in correct])
    return RolloutBatch(
        question_ids=ids,
        rewards_per_func=rewards,
        reward_names=["eg_answer", "kimi_length"],
        reward_weights=torch.ones(2),
        lengths=torch.tensor(lengths),
        finished=torch.ones(len(ids), dtype=torch.bool),
        num_generations=2,
        step=step,
        max_steps=10,
    )


def test_group_length_fills_each_question_from_its_own_rollouts():
    ext = GroupLength("kimi", "eg_answer", "kimi_length")
    batch = gathered(["a", "a", "b", "b"], [True, True, False, True], [10, 30, 100, 300])
    ext.on_rewards(batch)
    assert batch.column("kimi_length").tolist() == [0.5, -0.5, 0.0, -0.5]
    whole = GroupLength("kimi", "eg_answer", "kimi_length", scope="batch")
    batch = gathered(["a", "a", "b", "b"], [True, True, False, True], [10, 30, 100, 300])
    whole.on_rewards(batch)  # min 10, max 300 over all four
    lam = [0.5 - (n - 10) / 290 for n in (10, 30, 100, 300)]
    assert batch.column("kimi_length").tolist() == pytest.approx([lam[0], lam[1], 0.0, lam[3]])
    # groups are TRL's (num_generations consecutive rollouts): a question id repeated in the
    # dataset does not merge two prompts' rollouts
    same_id = gathered(["a", "a", "a", "a"], [True, True, False, True], [10, 30, 100, 300])
    GroupLength("kimi", "eg_answer", "kimi_length").on_rewards(same_id)
    assert same_id.column("kimi_length").tolist() == [0.5, -0.5, 0.0, -0.5]
    warm = GroupLength("kimi", "eg_answer", "kimi_length", warmup_steps=3)
    batch = gathered(["a", "a"], [True, True], [10, 30], step=2)
    warm.on_rewards(batch)  # still warming up: no length reward
    assert batch.column("kimi_length").tolist() == [0.0, 0.0]


def test_presets_wire_rewards_options_and_stages(tmp_path):
    from stepprune.rl.methods import METHODS, method_grpo_args, reward_names, reward_options
    from stepprune.rl.registry import build_rewards
    from stepprune.rl.sequence import stage_configs
    from stepprune.stages.grpo import GRPOStageConfig

    cfg = GRPOStageConfig(
        method="thinkprune",
        out=str(tmp_path / "tp"),
        extra_rewards=["soft_overlong"],
        reward_kwargs={
            "thinkprune": {"require_think": False},
            "soft_overlong": {"max_completion_len": 4000, "soft_punish_cache": 1000},
        },
        stages={"thinkprune-3": {"reward_kwargs": {"thinkprune": {"max_tokens": 150}}}},
    )
    stages = stage_configs(cfg)
    assert [s.method for s in stages] == ["thinkprune-1", "thinkprune-2", "thinkprune-3"]
    built = [build_rewards(reward_names(s), **reward_options(s)) for s in stages]
    assert [b[0].max_tokens for b in built] == [4000, 3000, 150]  # preset, preset, recipe
    assert all(not b[0].require_think and b[1].name == "soft_overlong" for b in built)
    caps = [method_grpo_args(s.method, s.grpo_args)["max_completion_length"] for s in stages]
    assert caps == [4000, 3000, 2000]
    sb = METHODS["shorterbetter"]
    assert sb.grpo_args == {"beta": 0.001, "temperature": 0.9}  # JingyangYi/ShorterBetter sb_7b.sh
    assert build_rewards(["sb_correctness"])[0].value == 2.0  # their alpha
    assert sb.extensions["group_length"]["rule"] == "shorterbetter"
    assert GroupLength(**sb.extensions["group_length"]).beta == 0.001  # their beta
    with pytest.raises(ValueError, match="already among"):
        reward_names(GRPOStageConfig(method="kimi", extra_rewards=["eg_answer"]))
    # one limit for the whole sequence would make the three stages the same
    for bad in (
        {"grpo_args": {"max_completion_length": 300}},
        {"reward_kwargs": {"thinkprune": {"max_tokens": 300}}},
    ):
        with pytest.raises(ValueError, match="each stage has its own length limit"):
            stage_configs(GRPOStageConfig(method="thinkprune", out=str(tmp_path / "x"), **bad))
    with pytest.raises(ValueError, match="reward 'soft_overlong': bad options"):
        build_rewards(["soft_overlong"])  # no default far above the run's cap


class ParityCorrect:
    """A correctness reward that needs no grader: 'correct' iff the ids sum to an even number,
    so the test can recompute it from the rollouts the loss saw, whatever their order."""

    def __init__(self, name: str, value: float):
        self.__name__, self.value = name, value

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        return [self.value if sum(ids) % 2 == 0 else 0.0 for ids in completion_ids]


@pytest.fixture(scope="module")
def eos_model(tiny_model_dir, tmp_path_factory):
    return biased_copy(tiny_model_dir, tmp_path_factory.mktemp("eos"))


@pytest.mark.parametrize(
    "rule, correct_name, value, length_reward",
    [
        ("kimi", "eg_answer", 1.0, KimiLengthReward),
        ("shorterbetter", "sb_correctness", 2.0, ShorterBetterLengthReward),
    ],
)
def test_one_step_advantages_equal_the_hand_total(
    eos_model, tmp_path, rule, correct_name, value, length_reward
):
    rewards = [ParityCorrect(correct_name, value), length_reward()]
    ext = GroupLength(rule, correct_name, length_reward.name, beta=0.01)
    trainer, _, _ = train_one_step(eos_model, tmp_path, rewards, [ext])
    seen = trainer.seen[0]  # one prompt's four rollouts, in the loss's order
    mask = seen["completion_mask"].bool()
    ids = [seen["completion_ids"][i][mask[i]].tolist() for i in range(len(mask))]
    lengths = [len(x) for x in ids]
    correct = [sum(x) % 2 == 0 for x in ids]
    assert len(set(lengths)) > 1  # the length part is not constant here
    if rule == "kimi":
        part = kimi_length(lengths, correct)
    else:
        part = shorterbetter_length(lengths, correct, beta=0.01)
    total = torch.tensor([value * c + p for c, p in zip(correct, part, strict=True)])
    expected = (total - total.mean()) / (total.std() + 1e-4)  # TRL's group advantage
    assert seen["advantages"].flatten().tolist() == pytest.approx(expected.tolist(), abs=1e-5)
