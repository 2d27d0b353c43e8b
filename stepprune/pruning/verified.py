"""Per-trajectory kappa, verified by the model (``stepprune prune --kappa verified --eval RUN``).

For each trajectory, the largest kappa of an eval run's grid at which the model still answered
correctly from the CoT pruned exactly as this prune will prune it: the same strategy, seed,
score, budget and options (the eval's ``eval_settings.json`` must agree). A trajectory that no
kappa > 0 keeps correct is *unverified*: kept unpruned (kappa 0, ``unverified="keep"``, the
default) or dropped (``"drop"``). Each output row records its kappa.

The eval run must come from the same generate run: every trajectory it holds must be in the
input with the same token count; anything else is refused before output is written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

SETTINGS = ("score", "budget", "protect_ends", "merge_skips")


def verified_kappas(eval_dir: str, cfg) -> pl.DataFrame:
    """(problem_id, sample_index, verified_kappa, original_tokens): the largest correct kappa > 0
    (null when none) per trajectory of ``eval_dir``'s results for ``cfg``'s strategy and seed."""
    import json

    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table, shard_files

    results_dir = Path(eval_dir) / "results"
    if not results_dir.is_dir() or not shard_files(results_dir):
        raise FileNotFoundError(f"--eval {eval_dir}: no eval results in {results_dir}")
    settings_file = Path(eval_dir) / "eval_settings.json"
    if not settings_file.exists():
        raise FileNotFoundError(
            f"--eval {eval_dir}: no eval_settings.json, so how it pruned is unknown; "
            "rerun stepprune eval into a new --out"
        )
    settings = json.loads(settings_file.read_text())
    differ = [
        f"{k}: {settings.get(k, 'unrecorded')!r} there, {getattr(cfg, k)!r} here"
        for k in SETTINGS
        if settings.get(k, "unrecorded") != getattr(cfg, k)
    ]
    if differ:
        raise ValueError(f"--eval {eval_dir} pruned otherwise ({'; '.join(differ)})")
    cols = ["problem_id", "sample_index", "strategy", "kappa", "seed", "correct", "original_tokens"]
    res = pl.from_arrow(read_table(results_dir, EVAL_RESULTS, columns=cols))
    res = res.filter((pl.col("strategy") == cfg.strategy) & (pl.col("seed") == cfg.seed))
    if not res.height:
        raise ValueError(
            f"--eval {eval_dir}: no results for strategy {cfg.strategy!r} at seed {cfg.seed}"
        )
    key = ["problem_id", "sample_index"]
    good = pl.col("kappa").filter(pl.col("correct") & (pl.col("kappa") > 0))
    return res.group_by(key).agg(
        verified_kappa=good.max(), original_tokens=pl.col("original_tokens").first()
    )


def check_same_run(verified: pl.DataFrame, generations: pl.DataFrame, eval_dir: str) -> None:
    """Refuse eval results whose trajectories are not the input's (another generate run)."""
    key = ["problem_id", "sample_index"]
    joined = verified.join(
        generations.select(*key, "n_tokens"), on=key, how="left", maintain_order="left"
    )
    bad = joined.filter(
        pl.col("n_tokens").is_null() | (pl.col("n_tokens") != pl.col("original_tokens"))
    )
    if bad.height:
        r = bad.row(0, named=True)
        what = "is not in the input" if r["n_tokens"] is None else "has another token count"
        raise ValueError(
            f"--eval {eval_dir}: trajectory ({r['problem_id']!r}, {r['sample_index']}) {what}: "
            "its results come from another generate run"
        )


def row_kappas(df: pl.DataFrame, verified: pl.DataFrame, unverified: str) -> pl.DataFrame:
    """``df`` with ``_kappa`` per row; unverified rows get 0 or are dropped."""
    key = ["problem_id", "sample_index"]
    out = df.join(
        verified.select(*key, "verified_kappa"), on=key, how="left", maintain_order="left"
    )
    if unverified == "drop":
        out = out.filter(pl.col("verified_kappa").is_not_null())
    return out.with_columns(_kappa=pl.col("verified_kappa").fill_null(0.0)).drop("verified_kappa")


def prune_by_kappa(df: pl.DataFrame, spec, tokenizer, origin) -> pl.DataFrame:
    """``prune_frame`` with each row at its own ``_kappa``, rows kept in their order."""
    from stepprune.pruning.select import prune_frame

    parts = [
        prune_frame(g, dataclasses.replace(spec, kappa=float(k)), tokenizer, origin)
        for (k,), g in df.group_by(["_kappa"], maintain_order=True)
    ]
    return pl.concat(parts, how="diagonal_relaxed").sort("_r")
