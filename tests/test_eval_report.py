"""Report tables from hand-made eval results: accuracy, tokens and Pass@n per strategy and kappa."""

import polars as pl
import pytest

from stepprune.evaluation.report import curve_table
from stepprune.stages.eval import EvalConfig


def _results(rows):
    cols = ["source", "problem_id", "sample_index", "strategy", "kappa", "correct"]
    df = pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])
    return df.with_columns(
        original_correct=pl.lit(True),
        kept_thinking_tokens=pl.lit(30),
        original_thinking_tokens=pl.lit(100),
        n_skipped=pl.lit(2),
        seed=pl.lit(0),
    )


def test_curve_pass_at_n_per_strategy_and_kappa():
    # Three samples of problem a (one right) and of b (none right), in two sources; problem
    # "a" exists in both sources and must not merge with itself in the pooled rows.
    rows = [
        ("s1", "a", 0, "low", 0.5, True),
        ("s1", "a", 1, "low", 0.5, False),
        ("s1", "a", 2, "low", 0.5, False),
        ("s1", "b", 0, "low", 0.5, False),
        ("s1", "b", 1, "low", 0.5, False),
        ("s1", "b", 2, "low", 0.5, False),
        ("s2", "a", 0, "low", 0.5, True),
        ("s2", "a", 1, "low", 0.5, True),
        ("s2", "a", 2, "low", 0.5, False),
    ]
    curve = curve_table(_results(rows), EvalConfig(bootstrap=50))
    by_source = {r["source"]: r for r in curve.iter_rows(named=True)}
    # pass@3 with n = 3: 1 if any of the 3 is right. pass@3(s1) = mean(1, 0); s2: 1.
    assert by_source["s1"]["pass_at_n"] == pytest.approx(0.5)
    assert by_source["s2"]["pass_at_n"] == pytest.approx(1.0)
    assert by_source["all"]["pass_at_n"] == pytest.approx(2 / 3)  # a/s1, b/s1, a/s2
    assert by_source["all"]["accuracy"] == pytest.approx(3 / 9)
    assert by_source["all"]["samples_per_problem"] == 3
    assert by_source["all"]["token_reduction_pct"] == pytest.approx(70.0)


def test_curve_pass_at_n_uses_the_fewest_samples_and_is_empty_for_one():
    # a has 3 samples (1 right), b has 2 (none right): n = 2. The unbiased estimator gives
    # pass@2(a) = 1 - C(2,2)/C(3,2) = 2/3 (not 1, as "any of a's samples right" would).
    rows = [
        ("s", "a", 0, "low", 0.8, True),
        ("s", "a", 1, "low", 0.8, False),
        ("s", "a", 2, "low", 0.8, False),
        ("s", "b", 0, "low", 0.8, False),
        ("s", "b", 1, "low", 0.8, False),
        ("s", "c", 0, "high", 0.8, True),
    ]
    curve = curve_table(_results(rows), EvalConfig(bootstrap=50))
    low = curve.filter((pl.col("source") == "s") & (pl.col("strategy") == "low")).row(0, named=True)
    assert low["samples_per_problem"] == 2 and low["pass_at_n"] == pytest.approx((2 / 3 + 0) / 2)
    high = curve.filter((pl.col("source") == "s") & (pl.col("strategy") == "high")).row(
        0, named=True
    )
    assert high["samples_per_problem"] == 1 and high["pass_at_n"] is None
