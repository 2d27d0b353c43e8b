"""Length-reward methods from the literature, as rewards for the RL layer's presets
(``rl.methods``): Kimi k1.5's length penalty, ShorterBetter, ThinkPrune and DAPO's soft overlong
punishment. Lengths are completion tokens, EOS included, as TRL counts them.

Where each constant comes from:

- Kimi k1.5 (arXiv 2501.12599, sec. 2.3.3): per problem, over its k rollouts,
  lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len); r = lambda if correct, else
  min(0, lambda); 0 for every rollout when all lengths are equal. The paper adds it to the
  correctness reward with an unstated weight (here ``reward_weights``, default 1) after a
  warm-up without it (``warmup_steps``, default 0). open-r1's ``len_reward`` (src/open_r1/
  rewards.py) takes min and max over all completions of one reward call (several problems) and
  counts characters; here they are the problem's rollouts (``scope="question"``, the paper) or the
  whole generation batch (``scope="batch"``), in tokens.
- ShorterBetter (arXiv 2504.21370; JingyangYi/ShorterBetter, verl/workers/reward_manager/
  naive.py): SOL = the shortest correct length of the problem's rollouts, or their mean length
  when none is correct; r = alpha 1[correct] - beta |len - SOL|, alpha 2.0, beta 0.001 (their
  scripts/train/sb_7b.sh). The correctness part is ``sb_correctness``, the length part
  ``sb_length``.
- ThinkPrune (arXiv 2504.01296; UCSB-NLP-Chang/ThinkPrune): r = 1 if the answer is correct and
  the rollout finished within the length limit L, else 0; L shrinks over stages, 4000 then 3000
  (local_scripts/multi_node_run_4k.sh, *_3k_from4k.sh) then 2000 (their iter2k models). Their
  code grades the text of a rollout cut at L, so one that already wrote a boxed answer can still
  score; the paper discards it (zero reward), and so does this reward.
- DAPO's soft overlong punishment (arXiv 2503.14476, Eq. 13): TRL's own
  ``trl.rewards.get_soft_overlong_punishment``; DAPO's L_max 20480 and cache 4096 (sec. 4.1),
  required options here (set them from the run's ``max_completion_length``).

Kimi's and ShorterBetter's length parts need every rollout of a problem, which may sit on other
processes: like CEEH's, those rewards return None and the ``GroupLength`` extension fills them in
from the gathered batch.
"""

from __future__ import annotations

from stepprune.rl.eg import AnswerReward, _AnswerReward
from stepprune.rl.hooks import Extension, RolloutBatch
from stepprune.rl.rewards import Reward

RULES = ("kimi", "shorterbetter")
SCOPES = ("question", "batch")


def kimi_length(lengths: list[float], correct: list[bool]) -> list[float]:
    """Kimi k1.5's length reward over one group (formula in the module docstring)."""
    low, high = min(lengths), max(lengths)
    if high == low:
        return [0.0] * len(lengths)
    lam = [0.5 - (n - low) / (high - low) for n in lengths]
    return [x if ok else min(0.0, x) for x, ok in zip(lam, correct, strict=True)]


def sample_optimal_length(lengths: list[float], correct: list[bool]) -> float:
    """ShorterBetter's SOL: the shortest correct length, else the group's mean length."""
    right = [n for n, ok in zip(lengths, correct, strict=True) if ok]
    return float(min(right)) if right else sum(lengths) / len(lengths)


def shorterbetter_length(lengths: list[float], correct: list[bool], beta=0.001) -> list[float]:
    """ShorterBetter's length part, -beta |len - SOL|, over one group."""
    sol = sample_optimal_length(lengths, correct)
    return [-beta * abs(n - sol) for n in lengths]


class GroupRewardColumn(Reward):
    """A reward column filled in by ``GroupLength`` from the gathered batch; alone, None."""

    def score(self, texts, completion_ids, columns):
        return [None] * len(texts)


class KimiLengthReward(GroupRewardColumn):
    """Kimi k1.5's length reward (module docstring), filled in by ``GroupLength``."""

    name = "kimi_length"


class ShorterBetterLengthReward(GroupRewardColumn):
    """ShorterBetter's -beta |len - SOL| (module docstring), filled in by ``GroupLength``."""

    name = "sb_length"


class ShorterBetterCorrectness(AnswerReward):
    """ShorterBetter's alpha 1[correct]: EG's answer reward with ``value`` (alpha) 2.0."""

    name = "sb_correctness"

    def __init__(self, value: float = 2.0, **options):
        super().__init__(value=value, **options)


class ThinkPruneReward(_AnswerReward):
    """ThinkPrune: ``value`` (1) if the final answer is correct and the rollout finished within
    ``max_tokens`` (L) tokens, else 0."""

    name = "thinkprune"

    def __init__(self, max_tokens: int = 4000, value: float = 1.0, **options):
        super().__init__(**options)
        if max_tokens <= 0:
            raise ValueError(f"{self.name}: max_tokens (L) must be > 0, got {max_tokens}")
        self.max_tokens, self.value = max_tokens, value

    def score(self, texts, completion_ids, columns):
        outcomes = self.outcomes(texts, completion_ids, columns)
        lengths = self.lengths(texts, completion_ids)
        return [
            self.value if o.correct and n <= self.max_tokens else 0.0
            for o, n in zip(outcomes, lengths, strict=True)
        ]


class SoftOverlongReward(Reward):
    """DAPO's soft overlong punishment, computed by TRL's ``get_soft_overlong_punishment``:
    0 for |y| <= L_max - L_cache, (L_max - L_cache - |y|) / L_cache up to L_max, -1 beyond.
    Usable beside any method's rewards (``extra_rewards: [soft_overlong]``). Both lengths are
    required: a default far above the run's generation cap would never punish (DAPO used
    20480 and 4096 with generation capped at 20480)."""

    name = "soft_overlong"

    def __init__(self, max_completion_len: int, soft_punish_cache: int, tokenizer=None):
        from trl.rewards import get_soft_overlong_punishment

        super().__init__(tokenizer)
        if not 0 <= soft_punish_cache <= max_completion_len:
            raise ValueError(f"{self.name}: need 0 <= soft_punish_cache <= max_completion_len")
        self.max_completion_len, self.soft_punish_cache = max_completion_len, soft_punish_cache
        self._trl = get_soft_overlong_punishment(max_completion_len, soft_punish_cache)

    def score(self, texts, completion_ids, columns):
        ids = completion_ids
        if ids is None:  # TRL's function reads only the lengths
            ids = [[0] * n for n in self.lengths(texts, None)]
        return [float(x) for x in self._trl(completion_ids=ids)]


class GroupLength(Extension):
    """Fills a group length reward (``length``) from the gathered batch: ``rule`` kimi or
    shorterbetter over each prompt's rollouts (``scope="question"``: TRL's group of
    ``num_generations``) or the whole batch.
    Correct rollouts are those whose ``correctness`` reward is > 0."""

    name = "group_length"

    def __init__(self, rule, correctness, length, beta=0.001, warmup_steps=0, scope="question"):
        if rule not in RULES or scope not in SCOPES:
            raise ValueError(f"group_length: rule in {RULES}, scope in {SCOPES}")
        if beta < 0 or warmup_steps < 0:
            raise ValueError("group_length: beta and warmup_steps must be >= 0")
        self.rule, self.correctness, self.length = rule, correctness, length
        self.beta, self.warmup_steps, self.scope = beta, warmup_steps, scope

    def values(self, lengths: list[float], correct: list[bool]) -> list[float]:
        if self.rule == "kimi":
            return kimi_length(lengths, correct)
        return shorterbetter_length(lengths, correct, self.beta)

    def on_rewards(self, batch: RolloutBatch) -> None:
        import torch

        correct = (torch.nan_to_num(batch.column(self.correctness), nan=0.0) > 0).tolist()
        lengths = batch.lengths.tolist()
        # TRL's groups: the num_generations consecutive rollouts of one prompt (by position,
        # so a question id repeated in the dataset cannot merge two groups)
        groups: dict[int, list[int]] = {}
        for i in range(len(lengths)):
            key = i // batch.num_generations if self.scope == "question" else 0
            groups.setdefault(key, []).append(i)
        out = [0.0] * len(lengths)
        if batch.step >= self.warmup_steps:
            for idx in groups.values():
                values = self.values([lengths[i] for i in idx], [correct[i] for i in idx])
                for i, v in zip(idx, values, strict=True):
                    out[i] = v
        column = batch.reward_names.index(self.length)
        dtype = batch.rewards_per_func.dtype
        batch.rewards_per_func[:, column] = torch.tensor(out, dtype=dtype)
        batch.metrics[f"{self.length}/mean"] = sum(out) / len(out) if out else float("nan")
