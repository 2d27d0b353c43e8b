"""CEEH (arXiv 2602.22642): compress the easy questions, explore the hard ones.

Per question id (``rl.state.QuestionTable``, gathered data only, identical on every rank):

- accuracy EMA: the first visit sets it to the group accuracy a; after that
  acc <- alpha a + (1 - alpha) acc, alpha = 0.2 if a > acc else 0.05;
- L_opt, EMA of the group's shortest correct length m: the first correct visit sets it; after
  that L_opt <- alpha m + (1 - alpha) L_opt, alpha = 0.2 if m < L_opt else 0.05.

Both are updated after the step's rewards: this step's hard flags and length rewards use the
state from before. A question is *hard* when its current group accuracy is <= the mean stored
accuracy of the questions seen so far (``hard_rule="current"``, the authors' code), or, with
``hard_rule="stored"`` (the paper's Eq. 10), when its stored accuracy (its current one if unseen)
is < that mean. Before any question is seen, none is hard.

Rewards: ``ceeh_correctness`` (1 correct, -0.5 wrong, -1 no final answer) plus ``ceeh_length``:
for a correct rollout of length L whose question's current accuracy is >= its stored one (or
unseen), r_len = max(-0.9, s (L_opt - L) / L_opt) with s = 0.1, 0 before L_opt exists; 0 for
every other rollout.

Entropy regularisation on hard questions only, scaled by schedule(t), t = steps done / max_steps
(cosine 0.5 (1 + cos(pi t)), linear 1 - t, constant 1):

- ``mode="me"``: loss -= coef schedule(t) sum_{hard tokens} H_t / N, N the completion tokens of the
  generation batch (the DAPO normaliser), so the term does not depend on how rollouts fall into
  micro-batches; ``easy_weight`` > 0 also regularises easy tokens (the paper's Eq. 11 uses 5 and 1).
- ``mode="ea"``: each hard token's advantage gains min(alpha H_t, |A| / kappa) schedule(t), H
  detached (alpha 0.4, kappa 2).

H_t is the full-vocabulary entropy TRL computes in its loss forward pass (logits divided by the
sampling temperature, as in verl). TRL's own ``entropy_coef`` acts on every token, so it stays 0.
"""

from __future__ import annotations

import math

from stepprune.rl.eg import _AnswerReward
from stepprune.rl.hooks import Extension, RolloutBatch
from stepprune.rl.rewards import Reward
from stepprune.rl.state import QuestionTable

SCHEDULES = ("cosine", "linear", "constant")
MODES = ("me", "ea", "none")
HARD_RULES = ("current", "stored")


def schedule(name: str, progress: float) -> float:
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "linear":
        return 1.0 - progress
    if name == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


def ema(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else alpha * new + (1.0 - alpha) * old


def updated_accuracy(old: float | None, new: float, fast=0.2, slow=0.05) -> float:
    """Rises fast, falls slowly; the first visit sets it."""
    return ema(old, new, fast if old is not None and new > old else slow)


def updated_l_opt(old: float | None, new_min: float, fast=0.2, slow=0.05) -> float:
    """Shortens fast, lengthens slowly; the first correct visit sets it."""
    return ema(old, new_min, fast if old is not None and new_min < old else slow)


def hard_flags(current: dict[str, float], table: QuestionTable, rule: str) -> dict[str, bool]:
    """Which questions are hard this step (rules in the module docstring)."""
    seen = table.values("acc")
    if not seen:
        return {q: False for q in current}
    mean = sum(seen) / len(seen)
    if rule == "current":
        return {q: acc <= mean for q, acc in current.items()}
    stored = {q: table.get(q, "acc") for q in current}
    return {q: (acc if stored[q] is None else stored[q]) < mean for q, acc in current.items()}


def length_reward(length: float, l_opt: float | None, scale=0.1, floor=-0.9) -> float:
    """r_len = max(floor, scale (L_opt - L) / L_opt); 0 before L_opt exists."""
    return 0.0 if l_opt is None else max(floor, scale * (l_opt - length) / l_opt)


class CorrectnessReward(_AnswerReward):
    """CEEH correctness: ``correct`` (1) if the final answer is right, ``wrong`` (-0.5) if it is
    wrong, ``no_answer`` (-1) without a final ``\\boxed{}`` answer (``rl.answers``)."""

    name = "ceeh_correctness"

    def __init__(self, correct=1.0, wrong=-0.5, no_answer=-1.0, **options) -> None:
        super().__init__(**options)
        self.correct, self.wrong, self.no_answer = correct, wrong, no_answer

    def score(self, texts, completion_ids, columns):
        values = {True: self.correct, False: self.wrong}
        outcomes = self.outcomes(texts, completion_ids, columns)
        return [self.no_answer if o.answer is None else values[o.correct] for o in outcomes]


class LengthReward(Reward):
    """CEEH's dynamic optimal-length reward r_len (formula in the module docstring). It needs
    every rollout of a question, which may sit on other processes, so the ``CEEH`` extension
    fills this column in from gathered data; alone, this function returns None (no reward)."""

    name = "ceeh_length"

    def score(self, texts, completion_ids, columns):
        return [None] * len(texts)


class CEEH(Extension):
    """Per-question difficulty, the length reward and hard-only entropy regularisation."""

    name = "ceeh"

    def __init__(
        self,
        mode: str = "me",
        coef: float = 0.001,
        schedule: str = "cosine",
        alpha: float = 0.4,
        kappa: float = 2.0,
        hard_rule: str = "current",
        length_scale: float = 0.1,
        length_floor: float = -0.9,
        fast: float = 0.2,
        slow: float = 0.05,
        hard_weight: float = 1.0,
        easy_weight: float = 0.0,
        correctness: str = "ceeh_correctness",
        length: str = "ceeh_length",
        correct_value: float = 1.0,
    ) -> None:
        for name, value, known in (
            ("mode", mode, MODES),
            ("schedule", schedule, SCHEDULES),
            ("hard_rule", hard_rule, HARD_RULES),
        ):
            if value not in known:
                raise ValueError(f"ceeh: unknown {name} {value!r}; known: {', '.join(known)}")
        if min(coef, alpha, hard_weight, easy_weight) < 0 or kappa <= 0:
            raise ValueError("ceeh: coef, alpha and the weights must be >= 0, kappa > 0")
        self.mode, self.coef, self.schedule, self.alpha, self.kappa = (
            mode,
            coef,
            schedule,
            alpha,
            kappa,
        )
        self.hard_rule, self.length_scale, self.length_floor = hard_rule, length_scale, length_floor
        self.fast, self.slow, self.hard_weight, self.easy_weight = (
            fast,
            slow,
            hard_weight,
            easy_weight,
        )
        self.correctness, self.length, self.correct_value = correctness, length, correct_value
        self.table = QuestionTable()

    # -- rewards, difficulty and state -----------------------------------------------------
    def on_rewards(self, batch: RolloutBatch) -> None:
        import torch

        correct = (batch.column(self.correctness) == self.correct_value).tolist()
        groups: dict[str, list[int]] = {}
        for i, q in enumerate(batch.question_ids):
            groups.setdefault(q, []).append(i)
        current = {q: sum(correct[i] for i in idx) / len(idx) for q, idx in groups.items()}
        hard = hard_flags(current, self.table, self.hard_rule)
        lengths = batch.lengths.tolist()
        r_len = [0.0] * len(lengths)
        for q, idx in groups.items():
            stored, l_opt = self.table.get(q, "acc"), self.table.get(q, "l_opt")
            if stored is None or current[q] >= stored:
                for i in (i for i in idx if correct[i]):
                    r_len[i] = length_reward(
                        lengths[i], l_opt, self.length_scale, self.length_floor
                    )
        column = batch.reward_names.index(self.length)
        batch.rewards_per_func[:, column] = torch.tensor(r_len, dtype=batch.rewards_per_func.dtype)
        device = batch.rewards_per_func.device
        batch.flags["hard"] = torch.tensor([hard[q] for q in batch.question_ids], device=device)
        if batch.training:
            self._update(groups, current, correct, lengths)
        self._log(batch, hard, r_len, correct)

    def _update(self, groups, current, correct, lengths) -> None:
        for q, idx in groups.items():
            acc = updated_accuracy(self.table.get(q, "acc"), current[q], self.fast, self.slow)
            self.table.set(q, "acc", acc)
            right = [lengths[i] for i in idx if correct[i]]
            if right:
                l_opt = updated_l_opt(self.table.get(q, "l_opt"), min(right), self.fast, self.slow)
                self.table.set(q, "l_opt", l_opt)

    def _log(self, batch, hard, r_len, correct) -> None:
        m = batch.metrics
        m["ceeh/frac_hard"] = sum(hard.values()) / len(hard)
        m["ceeh/frac_correct"] = sum(correct) / len(correct)
        right = [r for r, c in zip(r_len, correct, strict=True) if c]
        m["ceeh/length_reward_mean"] = sum(right) / len(right) if right else float("nan")
        for key, name in (("ceeh/l_opt_mean", "l_opt"), ("ceeh/acc_ema_mean", "acc")):
            values = self.table.values(name)
            m[key] = sum(values) / len(values) if values else float("nan")

    # -- entropy regularisation -----------------------------------------------------------
    def token_advantages(self, advantages, entropies, inputs, progress):
        if self.mode != "ea":
            return None
        import torch

        adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
        hard = inputs["rl_hard"].to(adv.dtype).unsqueeze(1)
        bonus = torch.minimum(self.alpha * entropies.detach(), adv.abs() / self.kappa)
        return adv + bonus * schedule(self.schedule, progress) * hard

    def extra_loss(self, entropies, mask, inputs, progress, normaliser):
        if self.mode != "me" or self.coef == 0:
            return None
        hard = inputs["rl_hard"].to(entropies.dtype).unsqueeze(1)
        weight = mask * (self.hard_weight * hard + self.easy_weight * (1.0 - hard))
        if not bool(weight.sum() > 0):
            return None  # no regularised token: exactly the plain GRPO update
        bonus = (entropies * weight).sum() / normaliser
        return -self.coef * schedule(self.schedule, progress) * bonus

    def loss_metrics(self, entropies, mask, inputs):
        hard = inputs["rl_hard"].to(entropies.dtype).unsqueeze(1)
        mask = mask.to(entropies.dtype)
        return {
            "entropy/hard": ((entropies * mask * hard).sum(), (mask * hard).sum()),
            "entropy/easy": ((entropies * mask * (1 - hard)).sum(), (mask * (1 - hard)).sum()),
        }

    def state_dict(self) -> dict:
        return {"questions": self.table.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.table.load_state_dict(state.get("questions", {}))
