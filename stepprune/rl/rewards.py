"""GRPO rewards: the base class every reward shares, and SE's four-part skip/length reward.

Each reward is a picklable callable class with TRL's signature ``(prompts, completions,
completion_ids, **dataset_columns) -> list[float | None]`` and a ``__name__`` (TRL logs
``rewards/<name>/mean``). Defaults are the authors' values; every threshold and weight is an
option. EG's and CEEH's rewards live in ``rl.eg`` and ``rl.ceeh``; ``rl.registry`` maps recipe
names to classes.

Shared reading of a completion (plain text, or TRL's conversational ``[{"role": "assistant",
"content": ...}]``):

- Thinking part: the text before ``</think>`` (after ``<think>`` when the completion opens it;
  the prompt may have opened it). Without ``</think>`` the whole completion is thinking, cut off
  before its answer, and there is no answer part.
- Steps: the thinking part split at blank lines (``stepprune.cot.steps.split_steps``). Skips are the
  ``[SKIP]`` occurrences in the thinking part, so "[SKIP]\\n[SKIP]" in one paragraph counts two
  and "[SKIP] Then x = 2." counts one skip plus one kept step: the paper counts [SKIP] tokens,
  and a model writing them next to text is still skipping. Kept steps are the steps with text
  left once their [SKIP]s are removed.
- If the tokenizer registers ``[SKIP]`` (or a think tag) as a *special* token, TRL's
  ``batch_decode(skip_special_tokens=True)`` deletes it from ``completions``; pass the tokenizer
  and the rewards re-decode ``completion_ids`` keeping those markers.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepprune.cot.steps import (
    DEFAULT_STEP_PATTERN,
    SKIP_TOKEN,
    THINK_CLOSE,
    THINK_OPEN,
    split_steps,
    split_thinking,
)

MARKERS = (SKIP_TOKEN, THINK_OPEN, THINK_CLOSE)


def completion_text(completion) -> str:
    """The text of one completion: a string, or the assistant contents of a message list."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
            content = "".join(block.get("text", "") for block in content)
        parts.append(content)
    return "".join(parts)


def completion_texts(completions, completion_ids=None, tokenizer=None) -> list[str]:
    """Completion texts, re-decoded from ids when the tokenizer would have dropped a marker."""
    texts = [completion_text(c) for c in completions]
    if tokenizer is None or completion_ids is None:
        return texts
    specials = set(tokenizer.all_special_tokens)
    if not specials.intersection(MARKERS):
        return texts
    drop = sorted(specials.difference(MARKERS), key=len, reverse=True)
    decoded = []
    for ids in completion_ids:
        text = tokenizer.decode(list(ids), skip_special_tokens=False)
        for token in drop:
            text = text.replace(token, "")
        decoded.append(text)
    return decoded


def answer_part(text: str) -> str | None:
    """The text after the first ``</think>``; None if the completion never closes its thinking."""
    close = text.find(THINK_CLOSE)
    return None if close < 0 else text[close + len(THINK_CLOSE) :]


@dataclass(frozen=True)
class SkipStats:
    n_skip: int
    n_kept: int

    @property
    def ratio(self) -> float | None:
        """#[SKIP] / (#[SKIP] + #kept steps); None with zero steps (no thinking at all)."""
        total = self.n_skip + self.n_kept
        return self.n_skip / total if total else None


def skip_stats(
    text: str, step_pattern: str = DEFAULT_STEP_PATTERN, skip_token: str = SKIP_TOKEN
) -> SkipStats:
    """[SKIP] count and kept-step count of the thinking part (rules in the module docstring)."""
    split = split_thinking(text, step_pattern, think_open=True)
    n_skip = n_kept = 0
    for start, end in split_steps(text, split.thinking_start, split.thinking_end, step_pattern):
        step = text[start:end]
        n_skip += step.count(skip_token)
        n_kept += bool(step.replace(skip_token, "").strip())
    return SkipStats(n_skip, n_kept)


class Reward:
    """Base of the rewards: TRL's calling convention, a ``__name__``, an optional tokenizer.

    ``stop_ids`` (set by ``build_rewards`` from the model's generation config) tells which token
    ends a completion, so a reward can tell a finished rollout from one cut off at the length
    limit; without it, every rollout counts as finished.
    """

    name = "reward"
    stop_ids: frozenset[int] | None = None

    def __init__(self, tokenizer=None) -> None:
        self.tokenizer = tokenizer
        self.__name__ = self.name

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        if completions is None:
            raise ValueError(f"{self.name}: no completions given")
        texts = completion_texts(completions, completion_ids, self.tokenizer)
        return self.score(texts, completion_ids, kwargs)

    def score(self, texts: list[str], completion_ids, columns: dict) -> list[float | None]:
        raise NotImplementedError

    def finished(self, completion_ids, n: int) -> list[bool]:
        """Whether each of the ``n`` rollouts ended with a stop token (True if unknown)."""
        if completion_ids is None or not self.stop_ids:
            return [True] * n
        return [len(ids) > 0 and ids[-1] in self.stop_ids for ids in completion_ids]

    def lengths(self, texts: list[str], completion_ids) -> list[int]:
        """Completion tokens: ``len(completion_ids[i])`` (what TRL generated, EOS included), else
        the tokenizer's count of the text (no special tokens added)."""
        if completion_ids is not None:
            return [len(ids) for ids in completion_ids]
        if self.tokenizer is not None:
            return [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        raise ValueError(f"{self.name}: needs completion_ids (TRL passes them) or a tokenizer")

    def golds(self, columns: dict, answer_column: str) -> list:
        """The gold answers, the dataset column ``answer_column``; a clear error without it."""
        if answer_column not in columns:
            known = sorted(
                k for k in columns if k not in ("trainer_state", "log_extra", "log_metric")
            )
            raise ValueError(
                f"{self.name}: no dataset column {answer_column!r} with the gold answers; "
                f"columns: {known}. Set reward_kwargs.{self.name}.answer_column."
            )
        return columns[answer_column]

    def __repr__(self) -> str:
        hidden = ("tokenizer", "__name__", "stop_ids")
        options = {k: v for k, v in vars(self).items() if k not in hidden}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


class CorrectnessReward(Reward):
    """``reward`` (+2) if the answer after ``</think>`` is correct, else ``wrong`` (0).

    r = reward if grade(text after </think>, gold).correct else wrong. A completion without
    ``</think>`` scores ``wrong``: it never reached an answer. The gold answer is the dataset
    column ``answer_column``; a row whose gold is None or empty gets None (does not apply).
    Grading: ``stepprune.data.grading.grade`` bounded by ``timeout`` seconds.
    """

    name = "correctness"

    def __init__(
        self,
        reward: float = 2.0,
        wrong: float = 0.0,
        answer_column: str = "gold_answer",
        timeout: float = 5.0,
        tokenizer=None,
    ) -> None:
        super().__init__(tokenizer)
        self.reward, self.wrong = reward, wrong
        self.answer_column, self.timeout = answer_column, timeout

    def score(self, texts, completion_ids, columns):
        from stepprune.data.grading import grade

        out: list[float | None] = []
        for text, gold in zip(texts, self.golds(columns, self.answer_column), strict=True):
            if gold is None or not str(gold).strip():
                out.append(None)
                continue
            answer = answer_part(text)
            correct = answer is not None and grade(answer, str(gold), timeout=self.timeout).correct
            out.append(self.reward if correct else self.wrong)
        return out


class SkipRatioReward(Reward):
    """Step-level skip ratio of the thinking part, in tiers.

    r = #[SKIP] / (#[SKIP] + #non-empty kept steps);
    reward = high (+1) if r >= high_at (0.8); mid (+0.5) if mid_at (0.5) <= r < high_at;
    else low (0). Zero steps (r undefined) gets ``low``. Also logs, through TRL's
    ``log_metric``, the batch means ``skip/ratio`` (r, 0 for zero steps), ``skip/count`` and
    ``skip/kept_steps``.

    ``denominator="authors"`` computes r as the authors' code does instead (``authors_ratio``):
    #[SKIP] / (#"\n\n" + #[SKIP]) over the thinking part, 0 when that is 0. Every blank line
    counts, also those around a [SKIP] step, so r stays below 1: "[SKIP]\n\n[SKIP]" gives 2/3.
    """

    name = "skip_ratio"

    def __init__(
        self,
        high: float = 1.0,
        high_at: float = 0.8,
        mid: float = 0.5,
        mid_at: float = 0.5,
        low: float = 0.0,
        step_pattern: str = DEFAULT_STEP_PATTERN,
        skip_token: str = SKIP_TOKEN,
        denominator: str = "steps",
        tokenizer=None,
    ) -> None:
        super().__init__(tokenizer)
        if not mid_at <= high_at:
            raise ValueError(f"{self.name}: mid_at ({mid_at}) must be <= high_at ({high_at})")
        if denominator not in ("steps", "authors"):
            raise ValueError(f"{self.name}: denominator {denominator!r}: steps or authors")
        self.high, self.high_at, self.mid, self.mid_at, self.low = high, high_at, mid, mid_at, low
        self.step_pattern, self.skip_token = step_pattern, skip_token
        self.denominator = denominator

    def tier(self, ratio: float | None) -> float:
        if ratio is None or ratio < self.mid_at:
            return self.low
        return self.high if ratio >= self.high_at else self.mid

    def score(self, texts, completion_ids, columns):
        stats = [skip_stats(t, self.step_pattern, self.skip_token) for t in texts]
        if self.denominator == "authors":
            ratios = [authors_ratio(t, self.skip_token) for t in texts]
        else:
            ratios = [s.ratio for s in stats]
        log_metric = columns.get("log_metric")
        if log_metric is not None and stats:
            n = len(stats)
            log_metric("skip/ratio", sum(r or 0.0 for r in ratios) / n)
            log_metric("skip/count", sum(s.n_skip for s in stats) / n)
            log_metric("skip/kept_steps", sum(s.n_kept for s in stats) / n)
        return [self.tier(r) for r in ratios]


def authors_ratio(text: str, skip_token: str = SKIP_TOKEN) -> float:
    """The skip ratio of the SE authors' ``grpo_train.py``: #[SKIP] / (#"\n\n" + #[SKIP]) in the
    thinking part (``str.count``, so "\n\n\n\n" is two), 0 when both counts are 0. Their
    thinking part is everything before ``</think>`` (without it, all but the last character);
    here it is the same thinking part as everywhere (module docstring)."""
    split = split_thinking(text, think_open=True)
    thinking = text[split.thinking_start : split.thinking_end]
    n_skip = thinking.count(skip_token)
    total = thinking.count("\n\n") + n_skip
    return n_skip / total if total else 0.0


class SkipCountReward(Reward):
    """Penalty for flooding the thinking part with [SKIP].

    reward = penalty (-2) if #[SKIP] in the thinking part > max_skips (100), else 0.
    """

    name = "skip_count"

    def __init__(
        self,
        penalty: float = -2.0,
        max_skips: int = 100,
        step_pattern: str = DEFAULT_STEP_PATTERN,
        skip_token: str = SKIP_TOKEN,
        tokenizer=None,
    ) -> None:
        super().__init__(tokenizer)
        self.penalty, self.max_skips = penalty, max_skips
        self.step_pattern, self.skip_token = step_pattern, skip_token

    def score(self, texts, completion_ids, columns):
        counts = [skip_stats(t, self.step_pattern, self.skip_token).n_skip for t in texts]
        return [self.penalty if n > self.max_skips else 0.0 for n in counts]


class LengthReward(Reward):
    """Penalty for long completions.

    reward = penalty (-1) if the completion has more than max_tokens (3500) tokens, else 0.
    Tokens: ``len(completion_ids[i])`` (what TRL generated, EOS included) when TRL passes ids,
    else the tokenizer given to the constructor (no special tokens added); neither is an error.
    """

    name = "length"

    def __init__(self, penalty: float = -1.0, max_tokens: int = 3500, tokenizer=None) -> None:
        super().__init__(tokenizer)
        self.penalty, self.max_tokens = penalty, max_tokens

    def score(self, texts, completion_ids, columns):
        lengths = self.lengths(texts, completion_ids)
        return [self.penalty if n > self.max_tokens else 0.0 for n in lengths]
