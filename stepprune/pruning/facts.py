"""What a step holds: does it state the trajectory's final answer, does it do arithmetic.

- *States the answer*: the step's text states the value of the trajectory's own final answer
  (its ``extracted_answer``; none when the model gave none), in the grader's normalised form
  (``data.grading.states_value``: ``0.5`` states ``1/2``, a ``\\boxed{}`` counts).
- *Arithmetic*: the step writes an equation or a computation: a number next to an operator or an
  equals sign (``3 + 5``, ``= 8``, ``12 / 4``, ``2 x 3``); every other step is *prose*.

A pruned chain of thought that still states the answer can be answered by copying it, whatever
the pruning removed (answer leakage); ``answer-first`` prunes these steps first to measure that.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

ARITHMETIC_RE = re.compile(
    r"\d\s*[-+*/×÷^x]\s*\(?\s*\$?\d|=\s*\(?\s*-?\$?\d|\d\s*\)?\s*=|\\times|\\div|\\frac\s*\{"
)


def is_arithmetic(text: str) -> bool:
    return bool(ARITHMETIC_RE.search(text or ""))


def step_facts(rows: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """``steps`` with ``_states`` (states its row's final answer) and ``_arith`` columns."""
    from stepprune.data.grading import states_value

    answers = dict(zip(rows["_r"].to_list(), rows["extracted_answer"].to_list(), strict=True))
    texts, row_ids = steps["text"].to_list(), steps["_r"].to_list()
    states = np.array(
        [states_value(t, answers.get(r)) for t, r in zip(texts, row_ids, strict=True)]
    )
    arith = np.array([is_arithmetic(t) for t in texts])
    return steps.with_columns(
        _states=pl.Series(states, dtype=pl.Boolean), _arith=pl.Series(arith, dtype=pl.Boolean)
    )


FACT_COLUMNS = {
    "n_pruned": pl.Int32,
    "kept_states_answer": pl.Boolean,
    "pruned_answer_steps": pl.Int32,
    "pruned_arithmetic_steps": pl.Int32,
    "pruned_arithmetic_entropy": pl.Float64,
    "pruned_prose_entropy": pl.Float64,
}


def fact_columns(rows: pl.DataFrame, steps: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    """Per row (_r): what the pruning removed and what the kept thinking still states.

    ``steps`` carries ``_states``, ``_arith`` (``step_facts``) and ``entropy_sum``; ``mask`` is
    the pruning's skip mask in the same order. Rows without steps get 0 and False.
    """
    s = steps.select("_r", "_states", "_arith", "entropy_sum").with_columns(_m=mask)
    pruned, arith = pl.col("_m"), pl.col("_arith")
    agg = s.group_by("_r").agg(
        n_pruned=pruned.sum(),
        kept_states_answer=pl.lit(False),  # set from the kept text by kept_states_answer
        pruned_answer_steps=(pl.col("_states") & pruned).sum(),
        pruned_arithmetic_steps=(arith & pruned).sum(),
        pruned_arithmetic_entropy=pl.col("entropy_sum").filter(arith & pruned).sum(),
        pruned_prose_entropy=pl.col("entropy_sum").filter(~arith & pruned).sum(),
    )
    out = rows.select("_r").join(agg, on="_r", how="left")
    return out.with_columns(
        [
            pl.col(c).fill_null(False if t == pl.Boolean else 0).cast(t)
            for c, t in FACT_COLUMNS.items()
        ]
    )


def kept_states_answer(rows: pl.DataFrame, comp: pl.DataFrame) -> pl.DataFrame:
    """``comp`` with ``kept_states_answer``: the compressed thinking (what the answering model
    reads) states the row's final answer. From the text, so the token control is covered too."""
    from stepprune.data.grading import states_value

    answers = dict(zip(rows["_r"].to_list(), rows["extracted_answer"].to_list(), strict=True))
    flags = [
        states_value(text, answers.get(r))
        for r, text in zip(comp["_r"].to_list(), comp["compressed_thinking"].to_list(), strict=True)
    ]
    return comp.with_columns(kept_states_answer=pl.Series(flags, dtype=pl.Boolean))
