"""The equal-cost reading of an eval: is pruning by entropy better than chance at the same cost?

From the per-result facts (``pruning.facts``) and the generations, beside ``report``'s tables:

- ``matched.csv``: for ``random-matched`` and ``high-matched``, the thinking tokens they removed
  minus what ``low`` removed on the same trajectory and kappa (mean, mean absolute, largest);
- ``restatement.csv``: per strategy and kappa, the share of pruned CoTs whose kept thinking still
  states the final answer, accuracy with and without it, and the share of pruned steps that
  stated it;
- ``step_classes.csv``: per strategy and kappa, the share of pruned steps that do arithmetic, and
  the mean step entropy of the pruned arithmetic and prose steps (first rows: all steps);
- ``scores.csv``: rank correlation (Spearman) of the step scores with ``sum``, per trajectory
  (mean over trajectories with >= 3 steps) and pooled over all steps;
- the headline: ``low`` minus ``random-matched`` over every kappa strictly between 0 and 1, on
  the same trajectories, with a bootstrap CI over problems.
"""

from __future__ import annotations

import numpy as np

from stepprune.evaluation.metrics import bootstrap_ci


def _removed(results):
    import polars as pl

    return results.with_columns(
        removed=pl.col("original_thinking_tokens") - pl.col("kept_thinking_tokens")
    )


def matched_gap(results):
    import polars as pl

    r = _removed(results)
    key = ["problem_id", "sample_index", "kappa"]
    low = r.filter(pl.col("strategy") == "low").select(*key, low_removed="removed")
    rows = []
    for strategy in ("random-matched", "high-matched"):
        g = r.filter(pl.col("strategy") == strategy).join(low, on=key)
        if not g.height:
            continue
        g = g.with_columns(gap=pl.col("removed") - pl.col("low_removed"))
        for (kappa,), h in g.group_by(["kappa"], maintain_order=True):
            gap = h["gap"].cast(pl.Float64)
            rows.append(
                dict(
                    strategy=strategy,
                    kappa=kappa,
                    n=h.height,
                    low_removed=float(h["low_removed"].mean()),
                    removed=float(h["removed"].mean()),
                    gap_mean=float(gap.mean()),
                    gap_abs_mean=float(gap.abs().mean()),
                    gap_abs_max=int(gap.abs().max()),
                )
            )
    return pl.DataFrame(rows).sort(["strategy", "kappa"]) if rows else pl.DataFrame()


def restatement(results):
    import polars as pl

    out = results.group_by(["strategy", "kappa"], maintain_order=True).agg(
        n=pl.len(),
        states_answer=pl.col("kept_states_answer").mean(),
        acc_stated=pl.col("correct").filter(pl.col("kept_states_answer")).mean(),
        acc_not_stated=pl.col("correct").filter(~pl.col("kept_states_answer")).mean(),
        pruned_steps_stating=pl.col("pruned_answer_steps").sum() / pl.col("n_pruned").sum(),
    )
    return out.sort(["strategy", "kappa"])


def step_classes(results, steps):
    """``steps``: one row per generations step with ``arith`` and ``entropy_sum`` (the steps of
    the evaluated trajectories only)."""
    import polars as pl

    if not steps.height:
        return pl.DataFrame()
    evaluated = results.select("problem_id", "sample_index").unique()
    steps = steps.join(evaluated, on=["problem_id", "sample_index"], how="semi")
    overall = steps.select(
        strategy=pl.lit("(all steps)"),
        kappa=pl.lit(None, pl.Float64),
        steps=pl.len(),
        arithmetic_share=pl.col("arith").mean(),
        arithmetic_entropy=pl.col("entropy_sum").filter(pl.col("arith")).mean(),
        prose_entropy=pl.col("entropy_sum").filter(~pl.col("arith")).mean(),
    )
    per = results.group_by(["strategy", "kappa"], maintain_order=True).agg(
        steps=pl.col("n_pruned").sum(),
        arithmetic_share=pl.col("pruned_arithmetic_steps").sum() / pl.col("n_pruned").sum(),
        arithmetic_entropy=pl.col("pruned_arithmetic_entropy").sum()
        / pl.col("pruned_arithmetic_steps").sum(),
        prose_entropy=pl.col("pruned_prose_entropy").sum()
        / (pl.col("n_pruned") - pl.col("pruned_arithmetic_steps")).sum(),
    )
    per = per.filter(pl.col("kappa") > 0).sort(["strategy", "kappa"])
    return pl.concat([overall.cast(per.schema), per])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank (as scipy's rankdata)."""
    import polars as pl

    return pl.Series(x).rank("average").to_numpy()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def score_correlations(steps):
    """``steps``: one row per step with _r and a column per score."""
    import polars as pl

    if not steps.height:
        return pl.DataFrame()
    rows = []
    for score in ("mean", "sampled", "surprisal"):
        per = [
            _spearman(g["sum"].to_numpy(), g[score].to_numpy())
            for _, g in steps.group_by("_r")
            if g.height >= 3
        ]
        per = [x for x in per if not np.isnan(x)]
        rows.append(
            dict(
                score=score,
                per_trajectory=float(np.mean(per)) if per else float("nan"),
                trajectories=len(per),
                pooled=_spearman(steps["sum"].to_numpy(), steps[score].to_numpy()),
            )
        )
    return pl.DataFrame(rows)


def headline(results, cfg) -> str:
    """One sentence: does ``low`` beat random steps at equal token cost on this model?"""
    import polars as pl

    key = ["source", "problem_id", "sample_index", "kappa"]
    mid = results.filter((pl.col("kappa") > 0) & (pl.col("kappa") < 1))
    per = mid.group_by([*key, "strategy"]).agg(pl.col("correct").cast(pl.Float64).mean())
    low = per.filter(pl.col("strategy") == "low").drop("strategy")
    ctrl = per.filter(pl.col("strategy") == "random-matched").drop("strategy")
    both = low.join(ctrl, on=key, suffix="_ctrl")
    if not both.height:
        return "No low / random-matched pairs to compare (run eval with both strategies)."
    diff = (both["correct"] - both["correct_ctrl"]).to_numpy()
    groups = (both["source"] + "\x00" + both["problem_id"]).to_numpy()
    lo, hi = bootstrap_ci(
        diff, level=cfg.ci_level, n_boot=cfg.bootstrap, seed=cfg.seed, groups=groups
    )
    verdict = "beats" if lo > 0 else "does worse than" if hi < 0 else "is indistinguishable from"
    return (
        f"At equal token cost, `low` {verdict} random step selection on this model: accuracy "
        f"low − random-matched = {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] "
        f"({cfg.ci_level:.0%} CI over problems; {both.height} trajectory-κ pairs, "
        f"0 < κ < 1, {cfg.random_seeds} random seeds)."
    )


def generation_steps(files):
    """Every thinking step of the generations (a model's own [SKIP]s left out): its row, the
    four scores (``pruning.scores``), ``arith`` and ``entropy_sum``."""
    import polars as pl
    import pyarrow.parquet as pq

    from stepprune.pruning.facts import is_arithmetic
    from stepprune.pruning.scores import logprob_scores

    frames, offset = [], 0
    for f in files:
        cols = ["problem_id", "sample_index", "steps", "token_logprobs"]
        df = pl.from_arrow(pq.read_table(f, columns=cols)).with_row_index("_row")
        df = df.with_row_index("_r", offset=offset)
        offset += df.height
        steps = df.select("_r", "steps").explode("steps").drop_nulls("steps").unnest("steps")
        if not steps.height:
            continue
        steps = steps.with_columns(
            sampled=pl.Series(logprob_scores(df, steps, "sampled")),
            surprisal=pl.Series(logprob_scores(df, steps, "surprisal")),
            arith=pl.Series([is_arithmetic(t) for t in steps["text"].to_list()], dtype=pl.Boolean),
        )
        keys = df.select("_r", "problem_id", "sample_index")
        steps = steps.join(keys, on="_r", how="left", maintain_order="left")
        frames.append(
            steps.filter(~pl.col("is_skip")).select(
                "_r",
                "problem_id",
                "sample_index",
                "arith",
                "sampled",
                "surprisal",
                pl.col("entropy_sum").cast(pl.Float64),
                sum=pl.col("entropy_sum").cast(pl.Float64),
                mean=pl.col("entropy_mean").cast(pl.Float64),
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame()
