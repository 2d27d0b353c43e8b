"""bench's tables and plots, recomputed from the generations shards of every (model, benchmark).

Per benchmark and model (and an ``average`` row per model over the benchmarks, as in the papers'
Table 1):

- ``acc``: pass@1 averaged over samples (per problem, then over problems), with a bootstrap CI
  that resamples problems and recomputes that same mean of per-problem means;
- ``len``: mean completion tokens, thinking and answer together, the end-of-sequence token
  included; ``thinking``: mean thinking tokens (the text before the answer, ``cot.steps``);
- ``reduction_pct`` = 100 (1 - len / len_base); ``l_acc`` = acc sqrt(1 - len / len_base)
  (0 when len >= len_base);
- ``pass@k`` for k = 1, 2, 4, ... and n (unbiased, Chen et al. 2021);
- ``skips`` (mean [SKIP] steps), ``skip_ratio`` (over rows with steps), ``steps``;
- ``s_per_problem`` (wall time for all of a problem's samples, batched as configured) and
  ``tok_s``, from ``timing.json``;
- thinking efficiency, evalscope's ``reasoning_tokens``, ``first_correct_tokens``,
  ``token_efficiency``, ``reflection_tokens`` and ``thought_num`` (``evaluation.efficiency``).

``paired.csv``: per model and benchmark (and all benchmarks pooled), the mean over problems of
(model - base) in accuracy and length, each with a paired bootstrap CI over problems.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from stepprune.evaluation.efficiency import EFFICIENCY_COLUMNS
from stepprune.evaluation.metrics import bootstrap_ci, l_acc, mean_pass_at_k

AVERAGE = "average"
EFFICIENCY_TABLE = ["benchmark", "model", "acc", *EFFICIENCY_COLUMNS]
COLUMNS = ["problem_id", "sample_index", "gold_answer", "correct", "n_tokens", "n_thinking_tokens"]
COLUMNS += ["n_steps", "steps"]


def load_rows(cfg):
    """Every counted row (``bench_layout.counted_rows``) of every (model, benchmark), with its
    skip count and its thinking-efficiency metrics (``evaluation.efficiency``)."""
    import polars as pl

    from stepprune.evaluation.bench_layout import benchmark_name, counted_rows
    from stepprune.evaluation.efficiency import efficiency_columns

    frames = []
    for source in cfg.benchmarks:
        for name in cfg.entry_names():
            df = counted_rows(cfg, name, source, COLUMNS).with_columns(
                n_skip=pl.col("steps").list.eval(pl.element().struct.field("is_skip")).list.sum(),
                model=pl.lit(name),
                benchmark=pl.lit(benchmark_name(source)),
            )
            frames.append(efficiency_columns(df, cfg.reflection_markers).drop("steps"))
    rows = pl.concat(frames)
    order = {name: i for i, name in enumerate(cfg.entry_names())}
    return rows.sort(pl.col("model").replace_strict(order), maintain_order=True)


def ks(n: int) -> list[int]:
    out = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    return out if n in out else [*out, n]


def _timing(cfg, model: str, bench: str) -> tuple[float, float]:
    from stepprune.evaluation.bench_layout import pair_dir

    path = pair_dir(cfg.out, model, bench) / "timing.json"
    if not path.exists():
        return math.nan, math.nan
    t = json.loads(path.read_text())
    if not t["rows"] or not t["seconds"]:
        return math.nan, math.nan
    return t["seconds"] / (t["rows"] / cfg.n_samples), t["tokens"] / t["seconds"]


def _stats(g, cfg, model: str, bench: str) -> dict:
    import polars as pl

    # acc weighs every problem alike, however many samples it has; so does its interval, which
    # resamples the per-problem means (sorted: the draw must not depend on row order), not the
    # pooled samples of the drawn problems.
    per_problem = (
        g.group_by("problem_id").agg(pl.col("correct").cast(pl.Float64).mean()).sort("problem_id")
    )
    means = per_problem["correct"].to_numpy()
    acc = float(means.mean())
    low, high = bootstrap_ci(means, level=cfg.ci_level, n_boot=cfg.bootstrap, seed=cfg.seed)
    n = int(g.group_by("problem_id").len()["len"].min())
    with_steps = g.filter(pl.col("n_steps") > 0)
    ratio = (with_steps["n_skip"] / with_steps["n_steps"]).mean() if with_steps.height else 0.0
    s_per_problem, tok_s = _timing(cfg, model, bench)
    row = dict(
        benchmark=bench,
        model=model,
        problems=per_problem.height,
        samples=n,
        acc=acc,
        acc_low=low,
        acc_high=high,
        len=float(g["n_tokens"].mean()),
        thinking=float(g["n_thinking_tokens"].mean()),
        skips=float(g["n_skip"].mean()),
        skip_ratio=float(ratio),
        steps=float(g["n_steps"].mean()),
        s_per_problem=s_per_problem,
        tok_s=tok_s,
    )
    for col in EFFICIENCY_COLUMNS:  # nulls (rows a metric does not apply to) are left out
        values = g[col].drop_nulls()
        row[col] = float(values.mean()) if values.len() else float("nan")
    correct = g["correct"].cast(pl.Int64).to_numpy()
    for k in ks(n):
        row[f"pass@{k}"] = mean_pass_at_k(g["problem_id"].to_numpy(), correct, k)
    return row


def main_table(rows, cfg):
    """One row per (benchmark, model), then an ``average`` row per model."""
    import polars as pl

    out = []
    for (bench, model), g in rows.group_by(["benchmark", "model"], maintain_order=True):
        out.append(_stats(g, cfg, model, bench))
    table = pl.DataFrame(out)
    base = table.filter(pl.col("model") == cfg.base_name).select(
        "benchmark", len_base=pl.col("len")
    )
    table = table.join(base, on="benchmark", how="left")
    nan = float("nan")
    table = table.with_columns(
        reduction_pct=100.0 * (1.0 - pl.col("len") / pl.col("len_base")),
        l_acc=pl.struct("acc", "len", "len_base").map_elements(
            lambda r: nan if r["len_base"] is None else l_acc(r["acc"], r["len"], r["len_base"]),
            return_dtype=pl.Float64,
        ),
    ).drop("len_base")
    numeric = [c for c in table.columns if c not in ("benchmark", "model")]
    average = table.group_by("model", maintain_order=True).agg([pl.col(c).mean() for c in numeric])
    # a mean of per-benchmark bounds is no interval: the average row has none
    average = average.with_columns(
        benchmark=pl.lit(AVERAGE), acc_low=pl.lit(nan), acc_high=pl.lit(nan)
    ).select(table.columns)
    return pl.concat([table, average.cast(table.schema)])


def paired_table(rows, cfg):
    """(model - base) per problem, averaged, with a paired bootstrap CI; pooled as ``all``.
    Every entry is paired with the base; a trained model also with its ``budget:match``
    baseline (``base`` names the reference of each row)."""
    import polars as pl

    per = rows.group_by(["benchmark", "model", "problem_id"]).agg(
        acc=pl.col("correct").cast(pl.Float64).mean(), len=pl.col("n_tokens").mean()
    )
    pairs = [(name, cfg.base_name) for name in cfg.entry_names() if name != cfg.base_name]
    pairs += [(b.match, b.name) for b in _match_baselines(cfg)]
    out = []
    for model, base in pairs:
        out += _paired_rows(per, model, base, cfg)
    # As the main table reads: entries as given, benchmarks as given, the pooled row last.
    from stepprune.evaluation.bench_layout import benchmark_name

    names = cfg.entry_names()
    benches = [benchmark_name(b) for b in cfg.benchmarks] + ["all"]
    out.sort(
        key=lambda r: (
            r["base"] != cfg.base_name,
            names.index(r["model"]),
            names.index(r["base"]),
            benches.index(r["benchmark"]),
        )
    )
    return pl.DataFrame(out)


def _match_baselines(cfg) -> list:
    baselines = getattr(cfg, "named_baselines", dict)()
    return [b for b in baselines.values() if b.match is not None]


def _paired_rows(per, model: str, base: str, cfg) -> list[dict]:
    import polars as pl

    ref = per.filter(pl.col("model") == base).drop("model")
    joined = per.filter(pl.col("model") == model).join(
        ref, on=["benchmark", "problem_id"], suffix="_base"
    )
    joined = joined.with_columns(
        d_acc=pl.col("acc") - pl.col("acc_base"), d_len=pl.col("len") - pl.col("len_base")
    )
    pooled = joined.with_columns(benchmark=pl.lit("all"))
    out = []
    for (bench,), g in pl.concat([joined, pooled]).group_by(["benchmark"], maintain_order=True):
        row = dict(benchmark=bench, model=model, base=base, problems=g.height)
        g = g.sort("benchmark", "problem_id")  # the bootstrap's draw must not depend on row order
        for col in ("d_acc", "d_len"):
            values = g[col].to_numpy()
            low, high = bootstrap_ci(
                values, level=cfg.ci_level, n_boot=cfg.bootstrap, seed=cfg.seed
            )
            row.update({col: float(np.mean(values)), f"{col}_low": low, f"{col}_high": high})
        out.append(row)
    return out


def _md(table, columns: list[str]) -> str:
    def cell(v):
        return (
            f"{v:.3f}"
            if isinstance(v, float) and not math.isnan(v)
            else "—"
            if v is None or (isinstance(v, float) and math.isnan(v))
            else str(v)
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in table.iter_rows(named=True)
    ]
    return "\n".join(lines)


def format_report(summary: dict) -> str:
    return summary["markdown"]


def write_report(cfg) -> dict:
    from stepprune.evaluation.plots import plot_bench_frontier, plot_bench_lengths

    out = Path(cfg.out)
    rows = load_rows(cfg)
    table, paired = main_table(rows, cfg), paired_table(rows, cfg)
    table.write_csv(out / "bench.csv")
    paired.write_csv(out / "paired.csv")
    passes = [c for c in table.columns if c.startswith("pass@")]
    main_cols = ["benchmark", "model", "acc", "acc_low", "acc_high", "len", "thinking"]
    main_cols += ["reduction_pct", "l_acc", *passes, "skips", "skip_ratio", "steps"]
    main_cols += ["s_per_problem", "tok_s"]
    pair_cols = ["benchmark", "model", "base", "problems", "d_acc", "d_acc_low", "d_acc_high"]
    pair_cols += ["d_len", "d_len_low", "d_len_high"]
    markdown = (
        f"# bench: {', '.join(cfg.entry_names())} (base: {cfg.base_name})\n\n"
        f"{_md(table, main_cols)}\n\nPaired, same problems (against the base, then trained "
        "models against their matched budget):\n\n"
        f"{_md(paired, pair_cols)}\n\nThinking efficiency (evalscope's names; definitions in "
        f"stepprune/evaluation/efficiency.py):\n\n{_md(table, EFFICIENCY_TABLE)}\n"
    )
    (out / "bench.md").write_text(markdown)
    plot_bench_lengths(rows, out / "lengths.png")
    budgets = [
        b.name
        for b in getattr(cfg, "named_baselines", dict)().values()
        if b.kind in ("budget", "match")
    ]
    plot_bench_frontier(table, out / "frontier.png", budgets)
    summary = {"table": table.to_dicts(), "paired": paired.to_dicts(), "markdown": markdown}
    (out / "bench.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
