"""Thinking-efficiency metrics of a generated row, named as in evalscope's thinking-efficiency
report so the figures compare; bench averages them per (benchmark, model).

Per row, from its steps (``cot.steps``: they partition the thinking tokens from token 0):

- ``reasoning_tokens``: the thinking tokens (``n_thinking_tokens``).
- ``first_correct_tokens`` (correct rows only): the thinking tokens up to the end of the first
  step that states the gold answer (``data.grading.states_value``, the answer-statement fact of
  ``pruning.facts``), that is, that step's ``token_end``. A correct row whose thinking never
  states the gold reached it only after all its thinking: ``reasoning_tokens``.
- ``token_efficiency`` (correct rows with thinking): first_correct_tokens / reasoning_tokens.
  1 means the answer came at the very end of the thinking; 0.2 means 80 % of the thinking
  followed an answer the model already had.
- ``reflection_tokens``: tokens of the steps whose text opens with a self-check marker
  (``MARKERS``: "wait", "let me check", "alternatively", ...; bench's ``reflection_markers``).
  evalscope counts instead the tokens after the first correct answer; that figure is
  reasoning_tokens - first_correct_tokens here, and reflection_tokens counts what the model
  spends re-checking, wherever it sits.
- ``thought_num``: the sub-thoughts: 1 + the reflection steps (a marker opens a new thought, as
  evalscope splits thoughts at such markers); 0 for a row without thinking.

Means: reasoning, reflection and thought_num over every row; first_correct_tokens and
token_efficiency over the correct rows that have them (NaN when none).
"""

from __future__ import annotations

import re

MARKERS = (
    "wait",
    "let me check",
    "let me verify",
    "let me double-check",
    "let me double check",
    "alternatively",
    "but wait",
    "hmm",
    "on second thought",
    "double-check",
)
EFFICIENCY_COLUMNS = (
    "reasoning_tokens",
    "first_correct_tokens",
    "token_efficiency",
    "reflection_tokens",
    "thought_num",
)


def marker_pattern(markers) -> re.Pattern:
    """A step opens with a marker: after leading spaces and punctuation, case ignored, the
    marker as whole words ("waiting" does not open with "wait")."""
    alternatives = "|".join(re.escape(m.lower()) for m in sorted(markers, key=len, reverse=True))
    return re.compile(rf"^[\s\W]*(?:{alternatives})\b", re.IGNORECASE)


def row_efficiency(
    steps: list[dict], gold, correct: bool, n_thinking: int, pattern: re.Pattern
) -> dict:
    """The five metrics of one row (module docstring); None where a metric does not apply."""
    from stepprune.data.grading import states_value

    reflective = [s for s in steps if not s["is_skip"] and pattern.search(s["text"])]
    out = {
        "reasoning_tokens": n_thinking,
        "first_correct_tokens": None,
        "token_efficiency": None,
        "reflection_tokens": sum(s["n_tokens"] for s in reflective),
        "thought_num": 1 + len(reflective) if n_thinking else 0,
    }
    if not correct:
        return out
    first = next((s for s in steps if states_value(s["text"], gold)), None)
    out["first_correct_tokens"] = first["token_end"] if first else n_thinking
    if n_thinking:
        out["token_efficiency"] = out["first_correct_tokens"] / n_thinking
    return out


def efficiency_columns(df, markers=MARKERS):
    """``df`` (``steps``, ``gold_answer``, ``correct``, ``n_thinking_tokens``) with the five
    per-row metric columns added (null where a metric does not apply)."""
    import polars as pl

    pattern = marker_pattern(markers)
    rows = [
        row_efficiency(steps or [], gold, bool(ok), int(n), pattern)
        for steps, gold, ok, n in zip(
            df["steps"].to_list(),
            df["gold_answer"].to_list(),
            df["correct"].to_list(),
            df["n_thinking_tokens"].to_list(),
            strict=True,
        )
    ]
    types = {c: pl.Float64 for c in EFFICIENCY_COLUMNS}
    return df.with_columns(pl.DataFrame(rows, schema=types, orient="row"))
