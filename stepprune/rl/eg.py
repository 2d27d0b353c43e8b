"""Entropy-Guided reasoning compression (EG, arXiv 2511.14258): its rewards and advantage rule.

Two RL stages, compress then explore (``rl.methods`` holds the presets):

- **Compress** (entropy falls): reward ``eg_compress`` (length clip plus a shaped length reward
  for correct rollouts) and the advantage rule ``PositiveAbsolute`` (A = scale * R for R > 0,
  no group normalisation, no gradient from the rest).
- **Explore** (entropy rises): TRL's own GRPO advantages (R - mean) / std over each group, at a
  higher temperature, with R = ``eg_format`` + ``eg_answer`` + ``eg_length``.

The authors released no code; where the paper leaves a value open, the choice is documented
here and is an option (README "EG").
"""

from __future__ import annotations

import math

from stepprune.rl.answers import judge
from stepprune.rl.hooks import Extension, RolloutBatch
from stepprune.rl.rewards import Reward

SHAPES = ("exp", "linear", "cosine")


def length_shape(n: float, max_tokens: int, r: float, shape: str = "exp") -> float:
    """f(n) for 0 <= n <= L, with f(0) = 1 and f(L) = r:

    - exp:    f(n) = exp(-lambda n), lambda = -ln(r) / L   (the paper's shaping)
    - linear: f(n) = 1 - (1 - r) n / L
    - cosine: f(n) = r + (1 - r) (1 + cos(pi n / L)) / 2
    """
    if shape == "exp":
        return math.exp(math.log(r) / max_tokens * n)
    if shape == "linear":
        return 1.0 - (1.0 - r) * n / max_tokens
    if shape == "cosine":
        return r + (1.0 - r) * (1.0 + math.cos(math.pi * n / max_tokens)) / 2.0
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


class _AnswerReward(Reward):
    """Shared options: where the final answer is (``rl.answers``), the gold column, a timeout."""

    def __init__(
        self,
        require_think: bool = True,
        answer_column: str = "gold_answer",
        timeout: float = 5.0,
        tokenizer=None,
    ) -> None:
        super().__init__(tokenizer)
        self.require_think, self.answer_column, self.timeout = require_think, answer_column, timeout

    def outcomes(self, texts, completion_ids, columns):
        golds = self.golds(columns, self.answer_column)
        finished = self.finished(completion_ids, len(texts))
        return [
            judge(t, g, require_think=self.require_think, finished=f, timeout=self.timeout)
            for t, g, f in zip(texts, golds, finished, strict=True)
        ]


class CompressReward(_AnswerReward):
    """EG compress: R(y) = f(|y|) if y is correct and not clipped, else 0.

    Clip: |y| > L (``max_tokens``, the paper's 4096), or y cut off before its end (no final
    answer) -> 0. f is ``length_shape(|y|, L, r, shape)``; r = f(L) is the reward of a correct
    rollout of exactly L tokens. The paper gives no r; the default 0.5 halves the reward over L
    tokens (lambda = ln 2 / L). |y| counts completion tokens, EOS included. Logs
    ``eg/frac_clipped`` and ``eg/frac_correct`` through TRL's ``log_metric``.
    """

    name = "eg_compress"

    def __init__(self, max_tokens: int = 4096, r: float = 0.5, shape: str = "exp", **options):
        super().__init__(**options)
        if max_tokens <= 0:
            raise ValueError(f"{self.name}: max_tokens (L) must be > 0, got {max_tokens}")
        if not 0.0 < r < 1.0:
            raise ValueError(f"{self.name}: r must lie in (0, 1), got {r}")
        if shape not in SHAPES:
            raise ValueError(f"{self.name}: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        self.max_tokens, self.r, self.shape = max_tokens, r, shape

    def score(self, texts, completion_ids, columns):
        outcomes = self.outcomes(texts, completion_ids, columns)
        lengths = self.lengths(texts, completion_ids)
        finished = self.finished(completion_ids, len(texts))
        clipped = [n > self.max_tokens or not f for n, f in zip(lengths, finished, strict=True)]
        log_metric = columns.get("log_metric")
        if log_metric is not None and texts:
            log_metric("eg/frac_clipped", sum(clipped) / len(texts))
            log_metric("eg/frac_correct", sum(o.correct for o in outcomes) / len(texts))
        return [
            length_shape(n, self.max_tokens, self.r, self.shape) if o.correct and not c else 0.0
            for o, n, c in zip(outcomes, lengths, clipped, strict=True)
        ]


class FormatReward(_AnswerReward):
    """EG explore R_format = ``value`` (1) if the rollout finished, closed its thinking (when
    ``require_think``) and gave a final ``\\boxed{}`` answer, else 0."""

    name = "eg_format"

    def __init__(self, value: float = 1.0, **options):
        super().__init__(**options)
        self.value = value

    def score(self, texts, completion_ids, columns):
        outcomes = self.outcomes(texts, completion_ids, columns)
        return [self.value if o.answer is not None else 0.0 for o in outcomes]


class AnswerReward(_AnswerReward):
    """EG explore R_answer = ``value`` (1) if the final answer is correct, else 0."""

    name = "eg_answer"

    def __init__(self, value: float = 1.0, **options):
        super().__init__(**options)
        self.value = value

    def score(self, texts, completion_ids, columns):
        outcomes = self.outcomes(texts, completion_ids, columns)
        return [self.value if o.correct else 0.0 for o in outcomes]


class LengthDecayReward(Reward):
    """EG explore R_length: 0 for |y| <= L; beyond L it falls by ``rate`` (0.25) per ``per``
    (1000) extra tokens.

    - step (default): R = -rate * ceil((|y| - L) / per): every started block of 1k extra tokens
      costs 0.25, so L + 1 and L + 1000 give -0.25, L + 1001 and L + 2000 give -0.5;
    - linear: R = -rate * (|y| - L) / per.

    ``floor`` (None: unbounded) caps the penalty. L (``max_tokens``) is compress's clip length.
    """

    name = "eg_length"

    def __init__(
        self,
        max_tokens: int = 4096,
        rate: float = 0.25,
        per: int = 1000,
        decay: str = "step",
        floor: float | None = None,
        tokenizer=None,
    ) -> None:
        super().__init__(tokenizer)
        if max_tokens <= 0 or per <= 0:
            raise ValueError(f"{self.name}: max_tokens and per must be > 0")
        if decay not in ("step", "linear"):
            raise ValueError(f"{self.name}: unknown decay {decay!r}; known: step, linear")
        self.max_tokens, self.rate, self.per, self.decay, self.floor = (
            max_tokens,
            rate,
            per,
            decay,
            floor,
        )

    def value(self, n: int) -> float:
        extra = n - self.max_tokens
        if extra <= 0:
            return 0.0
        blocks = math.ceil(extra / self.per) if self.decay == "step" else extra / self.per
        penalty = -self.rate * blocks
        return penalty if self.floor is None else max(self.floor, penalty)

    def score(self, texts, completion_ids, columns):
        return [self.value(n) for n in self.lengths(texts, completion_ids)]


class PositiveAbsolute(Extension):
    """EG compress's advantage: A(y) = scale * R(y) if R(y) > 0, else 0 (``scale`` is the
    paper's beta). No group mean or std: a correct rollout below its group's mean is still
    pushed up, and a rollout with R <= 0 gives no gradient.

    ``zero_in_normaliser`` (default False): whether rollouts with R <= 0 count in the loss
    normaliser. False masks them out of the loss, so the update is exactly the one computed from
    the positive rollouts alone, and its size does not shrink when most rollouts fail (their KL
    term, with ``beta`` > 0, goes too). Exact for the token-normalised losses (``dapo``,
    ``bnpo``, ``cispo``); ``grpo`` and ``dr_grpo`` still divide by the number of rollouts.
    """

    name = "positive_absolute"

    def __init__(self, scale: float = 1.0, zero_in_normaliser: bool = False) -> None:
        if scale <= 0:
            raise ValueError(f"{self.name}: scale (beta) must be > 0, got {scale}")
        self.scale, self.zero_in_normaliser = scale, zero_in_normaliser

    def advantages(self, batch: RolloutBatch):
        import torch

        rewards = torch.nan_to_num(batch.total_rewards(), nan=0.0)
        advantages = torch.where(rewards > 0, self.scale * rewards, torch.zeros_like(rewards))
        batch.metrics["eg/frac_positive"] = (rewards > 0).float().mean().item()
        return advantages

    def loss_rollouts(self, batch: RolloutBatch):
        if self.zero_in_normaliser:
            return None
        import torch

        return torch.nan_to_num(batch.total_rewards(), nan=0.0) > 0


class RolloutStats(Extension):
    """Logs, per step: the fraction of rollouts with a positive total reward
    (``rollouts/frac_positive_reward``), the fraction longer than L (``rollouts/frac_over_L``,
    when L is known) and the mean advantage in use (logged by the trainer)."""

    name = "rollout_stats"

    def __init__(self, max_tokens: int | None = None) -> None:
        self.max_tokens = max_tokens

    def on_rewards(self, batch: RolloutBatch) -> None:
        import torch

        rewards = torch.nan_to_num(batch.total_rewards(), nan=0.0)
        batch.metrics["rollouts/frac_positive_reward"] = (rewards > 0).float().mean().item()
        if self.max_tokens is not None:
            over = (batch.lengths > self.max_tokens).float().mean().item()
            batch.metrics["rollouts/frac_over_L"] = over
