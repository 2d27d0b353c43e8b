"""Final answers of GRPO rollouts, for the rewards that need one (EG, CEEH).

A rollout's *final answer* is the content of the last ``\\boxed{}`` in its answer region:

- ``require_think=True`` (reasoning models, R1 style): the region is the text after the first
  ``</think>``; a rollout that never closes its thinking has no final answer.
- ``require_think=False`` (instruct models without think tags): the text after ``</think>`` when
  there is one, else the whole completion.

A rollout cut off before its end-of-sequence token has no final answer either, whatever it
wrote: it never finished (``finished=False``). Grading is ``stepprune.data.grading.verify`` on
the boxed content, bounded by ``timeout`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepprune.cot.steps import THINK_CLOSE


@dataclass(frozen=True)
class Outcome:
    answer: str | None  # the final \boxed{} content; None: no final answer
    correct: bool


def answer_region(text: str, require_think: bool) -> str | None:
    close = text.find(THINK_CLOSE)
    if close >= 0:
        return text[close + len(THINK_CLOSE) :]
    return None if require_think else text


def judge(
    text: str, gold, *, require_think: bool, finished: bool = True, timeout: float = 5.0
) -> Outcome:
    """The rollout's final answer and whether it matches ``gold`` (rules in the module doc)."""
    from stepprune.data.grading import last_boxed, verify

    region = answer_region(text, require_think) if finished else None
    answer = last_boxed(region) if region is not None else None
    if answer is None:
        return Outcome(None, False)
    correct = gold is not None and verify(answer, str(gold), timeout=timeout)
    return Outcome(answer, correct)
