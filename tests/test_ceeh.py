"""CEEH (arXiv 2602.22642): formulas against hand values, grouping by question id, the hard-only
entropy term against a hand gradient, refusals, and the per-question state across a kill."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_ARGS, biased_copy
from killhook import killed_after
from test_rl_layer import SGD, FixedReward, train_one_step

from stepprune.rl.ceeh import (
    CEEH,
    hard_flags,
    length_reward,
    schedule,
    updated_accuracy,
    updated_l_opt,
)
from stepprune.rl.hooks import RolloutBatch
from stepprune.rl.state import QuestionTable


def test_accuracy_and_l_opt_emas_in_both_directions():
    assert updated_accuracy(None, 0.5) == 0.5  # first visit sets it
    assert updated_accuracy(0.5, 1.0) == pytest.approx(0.2 * 1.0 + 0.8 * 0.5)  # rises fast
    assert updated_accuracy(0.5, 0.0) == pytest.approx(0.95 * 0.5)  # falls slowly
    # 0 is a real accuracy, not "unseen": it is blended, never overwritten (the authors' <= 0)
    assert updated_accuracy(0.0, 0.5) == pytest.approx(0.1)
    assert updated_l_opt(None, 100) == 100
    assert updated_l_opt(100, 80) == pytest.approx(96.0)  # shorter: alpha 0.2
    assert updated_l_opt(100, 120) == pytest.approx(101.0)  # longer: alpha 0.05


def table(**accs) -> QuestionTable:
    t = QuestionTable()
    for q, acc in accs.items():
        t.set(q, "acc", acc)
    return t


def test_hard_rule_excludes_unseen_questions_from_the_mean():
    stored = table(a=0.2, b=0.8)  # mean 0.5 over seen questions only
    current = {"a": 0.5, "b": 0.75, "new": 0.25}
    assert hard_flags(current, stored, "current") == {"a": True, "b": False, "new": True}
    # the paper's variant: the stored accuracy against the mean (unseen: the current one)
    assert hard_flags(current, stored, "stored") == {"a": True, "b": False, "new": True}
    assert hard_flags({"a": 0.9, "new": 0.6}, stored, "stored") == {"a": True, "new": False}
    assert hard_flags({"a": 0.0}, QuestionTable(), "current") == {"a": False}  # nothing seen
    # a stored 0 is a real accuracy that pulls the mean down
    assert hard_flags({"x": 0.3}, table(a=0.0, b=0.8), "current") == {"x": True}
    assert hard_flags({"x": 0.5}, table(a=0.0, b=0.8), "current") == {"x": False}


def test_length_reward_around_l_opt_and_its_floor():
    assert length_reward(50, 100) == pytest.approx(0.05)
    assert length_reward(100, 100) == 0.0
    assert length_reward(150, 100) == pytest.approx(-0.05)
    assert length_reward(10_000, 100) == -0.9  # 0.1 * (100 - 10000) / 100 = -9.9 -> floor
    assert length_reward(10, None) == 0.0  # before L_opt exists


@pytest.mark.parametrize(
    ("name", "values"),
    [("cosine", (1.0, 0.5, 0.0)), ("linear", (1.0, 0.5, 0.0)), ("constant", (1.0, 1.0, 1.0))],
)
def test_schedules_at_0_half_and_end(name, values):
    assert [schedule(name, t) for t in (0.0, 0.5, 1.0)] == pytest.approx(list(values), abs=1e-12)


def test_entropy_advantage_is_capped_and_only_on_hard_rows():
    ext = CEEH(mode="ea", alpha=0.4, kappa=2.0, schedule="constant")
    adv = torch.tensor([1.0, -1.0, 1.0])
    ent = torch.tensor([[0.5, 10.0], [0.5, 10.0], [0.5, 10.0]])
    inputs = {"rl_hard": torch.tensor([True, True, False])}
    out = ext.token_advantages(adv, ent, inputs, progress=0.3)
    # min(0.4 H, |A| / 2): 0.2 below the cap, 0.5 at it; added to a negative A too; easy rows keep A
    expected = torch.tensor([[1.2, 1.5], [-0.8, -0.5], [1.0, 1.0]])
    torch.testing.assert_close(out, expected)
    cosine = CEEH(mode="ea", schedule="cosine").token_advantages(adv, ent, inputs, 0.5)
    assert cosine[0].tolist() == pytest.approx([1.1, 1.25])
    assert CEEH(mode="me").token_advantages(adv, ent, inputs, 0.0) is None


def batch(ids, correct, lengths, training=True) -> RolloutBatch:
    rewards = torch.tensor([[1.0 if c else -0.5, float("nan")] for c in correct])
    return RolloutBatch(
        question_ids=ids,
        rewards_per_func=rewards,
        reward_names=["ceeh_correctness", "ceeh_length"],
        reward_weights=torch.ones(2),
        lengths=torch.tensor(lengths),
        finished=torch.ones(len(ids), dtype=torch.bool),
        num_generations=2,
        step=0,
        max_steps=10,
        training=training,
    )


def test_groups_by_question_id_gates_the_length_reward_and_updates_after():
    ext = CEEH()
    ext.table.set("a", "acc", 0.75)
    ext.table.set("a", "l_opt", 100.0)
    ext.table.set("b", "acc", 0.25)
    ext.table.set("b", "l_opt", 40.0)
    # rows interleaved as a reordered batch would have them: grouping is by id, not position
    b = batch(["a", "b", "a", "b"], [True, True, True, False], [50, 20, 150, 60])
    ext.on_rewards(b)
    # a: current 1.0 >= 0.75 -> rewarded; b: current 0.5 >= 0.25 -> its correct rollout too
    assert b.column("ceeh_length").tolist() == pytest.approx([0.05, 0.05, -0.05, 0.0])
    # hard: current accuracy <= mean of the stored (0.5) before the update
    assert b.flags["hard"].tolist() == [False, True, False, True]
    assert ext.table.get("a", "acc") == pytest.approx(0.2 * 1.0 + 0.8 * 0.75)
    assert ext.table.get("b", "acc") == pytest.approx(0.2 * 0.5 + 0.8 * 0.25)
    assert ext.table.get("a", "l_opt") == pytest.approx(0.2 * 50 + 0.8 * 100)
    assert ext.table.get("b", "l_opt") == pytest.approx(0.2 * 20 + 0.8 * 40)
    assert b.metrics["ceeh/frac_hard"] == 0.5 and b.metrics["ceeh/frac_correct"] == 0.75
    gated = CEEH()
    gated.table.set("a", "acc", 0.9)
    gated.table.set("a", "l_opt", 100.0)
    g = batch(["a", "a"], [True, False], [50, 60])
    gated.on_rewards(g)  # current 0.5 < stored 0.9: no length reward
    assert g.column("ceeh_length").tolist() == [0.0, 0.0]
    frozen = CEEH()
    frozen.on_rewards(batch(["a", "a"], [True, True], [5, 6], training=False))
    assert len(frozen.table) == 0  # TRL's eval loop never changes the state


# ---- the ME term on the tiny model ---------------------------------------------------------


def _ceeh(**kwargs) -> CEEH:
    options = dict(mode="me", coef=0.5, schedule="constant", correctness="fixed")
    return CEEH(length="zero_len", **{**options, **kwargs})


def _train(model, path, extensions):
    """One SGD step; rewards: fixed correctness values and the length column CEEH fills."""
    rewards = [FixedReward([1.0, -0.5, 1.0, -1.0]), FixedReward([0.0] * 4, "zero_len")]
    return train_one_step(model, path, rewards, extensions)


@pytest.fixture(scope="module")
def eos_model(tiny_model_dir, tmp_path_factory):
    return biased_copy(tiny_model_dir, tmp_path_factory.mktemp("eos"))


def test_me_with_no_hard_question_is_exactly_the_plain_update(eos_model, tmp_path):
    plain, p0, p_plain = _train(eos_model, tmp_path / "plain", [])
    me, _, p_me = _train(eos_model, tmp_path / "me", [_ceeh()])
    assert torch.equal(plain.seen[0]["completion_ids"], me.seen[0]["completion_ids"])
    assert not me.seen[0]["rl_hard"].any()  # first visit: nothing seen, nothing hard
    assert all(torch.equal(p_plain[n], p_me[n]) for n in p0)


def test_me_gradient_is_the_hard_tokens_entropy_by_hand(eos_model, tmp_path):
    from transformers import AutoModelForCausalLM

    plain, p0, p_plain = _train(eos_model, tmp_path / "plain", [])
    ext = _ceeh()
    for q in ("q0", "q1", "q2", "q3"):
        ext.table.set(q, "acc", 1.0)  # mean 1.0: every current accuracy is <= it -> all hard
    me, _, p_me = _train(eos_model, tmp_path / "me", [ext])
    batch = me.seen[0]
    assert batch["rl_hard"].all()
    assert torch.equal(plain.seen[0]["completion_ids"], batch["completion_ids"])
    model = AutoModelForCausalLM.from_pretrained(eos_model, dtype=torch.float32)
    total = torch.zeros(())
    for i in range(4):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        logits = model(torch.cat([prompt, completion])[None]).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)
        total = total - (logp.exp() * logp).sum()
    (total / batch["completion_mask"].sum()).backward()
    for name, param in model.named_parameters():
        expected = SGD["learning_rate"] * 0.5 * param.grad  # -lr * grad(-coef * sum H / N)
        torch.testing.assert_close(p_me[name] - p_plain[name], expected, rtol=2e-3, atol=2e-7)
    history = me.state.log_history[0]
    assert history["entropy/hard"] > 0 and history["entropy/easy"] is None  # no easy token


def test_ea_goes_through_the_trainers_token_advantages_by_hand(eos_model, tmp_path):
    """EA through RLTrainer's token_advantages hook: the update minus the plain one is
    -lr * grad(-sum_t b_t log p_t / N), b_t = min(alpha H_t, |A| / kappa) on hard rows, H from
    the model before the step (detached), alpha 0.4 and kappa 2 (the authors' values)."""
    from transformers import AutoModelForCausalLM

    plain, p0, p_plain = _train(eos_model, tmp_path / "plain", [])
    ext = _ceeh(mode="ea")
    for q in ("q0", "q1", "q2", "q3"):
        ext.table.set(q, "acc", 1.0)  # every question hard
    ea, _, p_ea = _train(eos_model, tmp_path / "ea", [ext])
    batch = ea.seen[0]
    assert batch["rl_hard"].all()
    assert torch.equal(plain.seen[0]["completion_ids"], batch["completion_ids"])
    model = AutoModelForCausalLM.from_pretrained(eos_model, dtype=torch.float32)
    total, capped = torch.zeros(()), 0
    for i in range(4):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
        logits = model(torch.cat([prompt, completion])[None]).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)
        entropy = -(logp.exp() * logp).sum(-1).detach()
        cap = batch["advantages"][i].abs() / 2.0
        bonus = torch.minimum(0.4 * entropy, cap)
        capped += int((0.4 * entropy > cap).sum())
        total = total + (bonus * logp[torch.arange(len(completion)), completion]).sum()
    (-total / batch["completion_mask"].sum()).backward()
    assert capped > 0  # the |A| / kappa cap was reached somewhere: both branches are used
    for name, param in model.named_parameters():
        expected = -SGD["learning_rate"] * param.grad
        torch.testing.assert_close(p_ea[name] - p_plain[name], expected, rtol=5e-3, atol=5e-7)


# ---- the stage: refusals, and the state across a kill ----------------------------------------


def _cli(model, problems, out, *extra, steps=3):
    args = {**TINY_ARGS, "max_steps": steps, "report_to": "none"}
    # every rollout counts as correct (no final answer is scored 1), so L_opt follows the
    # varying lengths of the tiny model's rollouts and the state is not all zeros
    rewards = {"ceeh_correctness": {"require_think": False, "no_answer": 1.0}}
    return [
        *(sys.executable, "-m", "stepprune.cli", "grpo", "--method", "ceeh"),
        *("--model", str(model), "--problems", str(problems), "--out", str(out)),
        *(
            "--set",
            f"grpo_args={json.dumps(args)}",
            "--set",
            f"reward_kwargs={json.dumps(rewards)}",
        ),
        *extra,
    ]


def _problems(path, ids):
    path.write_text(
        "".join(
            json.dumps({"id": q, "problem": f"{i} apples?", "answer": str(i)}) + "\n"
            for i, q in enumerate(ids)
        )
    )
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--set", "id_field=id"), "duplicate id 'q1' (lines 2 and 3)"),
        (("--set", 'method_kwargs={"ceeh": {"coef": -0.1}}'), "must be >= 0"),
        (("--set", 'method_kwargs={"ceeh": {"schedule": "step"}}'), "unknown schedule 'step'"),
        (("--set", 'method_kwargs={"ceeh": {"mode": "both"}}'), "unknown mode 'both'"),
    ],
)
def test_bad_ceeh_input_is_one_line_before_training(tiny_model_dir, tmp_path, extra, message):
    ids = ["q0", "q1", "q1", "q3"] if "id_field=id" in extra else ["q0", "q1", "q2", "q3"]
    problems = _problems(tmp_path / "p.jsonl", ids)
    out = tmp_path / "out"
    proc = subprocess.run(
        _cli(tiny_model_dir, problems, out, *extra), capture_output=True, text=True
    )
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not out.exists()


@pytest.mark.slow
def test_state_is_saved_with_checkpoints_and_goes_on_exactly_after_a_kill(tiny_model_dir, tmp_path):
    model = biased_copy(tiny_model_dir, tmp_path / "model")
    problems = _problems(tmp_path / "p.jsonl", [f"q{i}" for i in range(8)])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = subprocess.run(_cli(model, problems, tmp_path / "whole"), env=env, capture_output=True)
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]
    out = tmp_path / "killed"
    killed_after(out / "checkpoint-1", _cli(model, problems, out), env, tmp_path / "stderr.log")
    assert not (out / "checkpoint-2").exists()
    resumed = subprocess.run(_cli(model, problems, out, "--resume"), env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert "resume from " in resumed.stderr.decode() and "checkpoint-" in resumed.stderr.decode()

    def state(path):
        return json.loads(path.read_text())["ceeh"]["questions"]

    first = state(tmp_path / "whole" / "checkpoint-1" / "rl_state.json")
    assert state(out / "checkpoint-1" / "rl_state.json") == first
    final = state(tmp_path / "whole" / "rl_state.json")
    assert state(out / "rl_state.json") == final
    assert len(final) > len(first) >= 1  # later steps saw more questions
    assert all(math.isfinite(row["l_opt"]) and row["acc"] == 1.0 for row in final.values())
    history = [json.loads(x) for x in (out / "log_history.jsonl").open()]
    assert all("ceeh/frac_hard" in h for h in history if "reward" in h)
    assert (out / "entropy_hard_easy.png").stat().st_size > 1000


def test_me_update_is_the_same_in_one_or_two_micro_batches(eos_model, tmp_path):
    """CEEH-ME's normaliser is the generation batch's token count, so splitting the same four
    rollouts into two micro-batches of two (gradient accumulation) gives the same update."""
    rewards = [FixedReward([1.0, -0.5, 1.0, -1.0]), FixedReward([0.0] * 4, "zero_len")]
    runs = {}
    for name, args in (
        ("one", {}),
        ("two", {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}),
    ):
        ext = _ceeh()
        for q in ("q0", "q1", "q2", "q3"):
            ext.table.set(q, "acc", 1.0)  # every question hard
        trainer, before, after = train_one_step(eos_model, tmp_path / name, rewards, [ext], **args)
        ids = torch.cat([b["completion_ids"] for b in trainer.seen]).tolist()
        runs[name] = (sorted(map(tuple, ids)), {n: after[n] - before[n] for n in before})
    assert runs["one"][0] == runs["two"][0]  # the same rollouts, split differently
    assert len(runs["two"][1]) and any(d.abs().max() > 1e-6 for d in runs["one"][1].values())
    for n, delta in runs["one"][1].items():
        torch.testing.assert_close(runs["two"][1][n], delta, rtol=2e-3, atol=2e-7)
