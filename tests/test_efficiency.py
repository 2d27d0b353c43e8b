"""Thinking-efficiency metrics (evaluation/efficiency.py) against values counted by hand on
hand-built rows, and bench's means of them over a hand-built table."""

from __future__ import annotations

import math

import polars as pl
import pytest

from stepprune.evaluation.efficiency import MARKERS, efficiency_columns, marker_pattern


def step(text: str, start: int, end: int, skip: bool = False) -> dict:
    return {
        "text": text,
        "token_start": start,
        "token_end": end,
        "n_tokens": end - start,
        "is_skip": skip,
    }


# Thinking of 40 tokens in four steps: the gold 12 is first stated in the second step (ends at
# token 18); the third step re-checks ("Wait, ...", 12 tokens), the fourth restates.
CHECKED = [
    step("There are 3 boxes of 4.", 0, 8),
    step("So 3 x 4 = 12 apples.", 8, 18),
    step("Wait, let me recount: 4 + 4 + 4 is 12.", 18, 30),
    step("The answer is 12.", 30, 40),
]
ROWS = pl.DataFrame(
    {
        "steps": [
            CHECKED,
            CHECKED,  # the same thinking, graded wrong: no first_correct or efficiency
            [step("Half of it: \\frac{1}{2}.", 0, 6)],  # 0.5 stated as a fraction
            [
                step("Alternatively, guess 7.", 0, 5),
                step("[SKIP]", 5, 6, skip=True),
                step("hmm, waiting is not a marker", 6, 9),
            ],  # correct, gold never stated
            [],  # no thinking at all, correct
        ],
        "gold_answer": ["12", "12", "0.5", "9", "3"],
        "correct": [True, False, True, True, True],
        "n_thinking_tokens": [40, 40, 6, 9, 0],
    }
)


def test_each_metric_equals_its_hand_count():
    out = (
        efficiency_columns(ROWS)
        .select(
            "reasoning_tokens",
            "first_correct_tokens",
            "token_efficiency",
            "reflection_tokens",
            "thought_num",
        )
        .rows()
    )
    assert out[0] == (40, 18, 18 / 40, 12, 2)
    assert out[1] == (40, None, None, 12, 2)
    assert out[2] == (6, 6, 1.0, 0, 1)
    # "Alternatively" (5 tokens) and "hmm," (3 tokens) open reflection steps: "waiting" after
    # "hmm" does not matter, the step already opens with a marker; the [SKIP] step is no step
    assert out[3] == (9, 9, 1.0, 8, 3)
    assert out[4] == (0, 0, None, 0, 0)


def test_markers_match_whole_words_at_the_opening_only():
    pattern = marker_pattern(MARKERS)
    assert pattern.search("  **Wait**, that is wrong")
    assert pattern.search("LET ME CHECK: 3 + 4")
    assert not pattern.search("Waiting for the bus takes 5 minutes")
    assert not pattern.search("So we wait 5 minutes")
    custom = marker_pattern(["verify"])
    assert custom.search("Verify: 2 + 2 = 4") and not custom.search("Wait, 2 + 2 = 4")


def test_bench_means_leave_out_rows_a_metric_does_not_apply_to(tmp_path):
    from test_bench import hand_cfg

    from stepprune.evaluation.bench_report import main_table

    rows = (
        efficiency_columns(ROWS)
        .drop("steps", "gold_answer")
        .with_columns(
            problem_id=pl.Series([f"p{i}" for i in range(5)]),
            n_tokens=pl.lit(50),
            n_steps=pl.lit(1),
            n_skip=pl.lit(0),
            model=pl.lit("base"),
            benchmark=pl.lit("b"),
        )
    )
    cfg = hand_cfg(tmp_path, named_models=lambda: {"base": "x"})
    r = main_table(rows, cfg).row(0, named=True)
    assert r["reasoning_tokens"] == pytest.approx((40 + 40 + 6 + 9 + 0) / 5)
    assert r["first_correct_tokens"] == pytest.approx((18 + 6 + 9 + 0) / 4)
    assert r["token_efficiency"] == pytest.approx((18 / 40 + 1 + 1) / 3)
    assert r["reflection_tokens"] == pytest.approx((12 + 12 + 0 + 8 + 0) / 5)
    assert r["thought_num"] == pytest.approx((2 + 2 + 1 + 3 + 0) / 5)
    assert not math.isnan(r["acc"])
