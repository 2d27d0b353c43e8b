"""Eval reports: per-(source, strategy, kappa) tables with bootstrap CIs, the plain ACC/LEN/L-Acc
table of a generate run, paired strategy differences, Markdown/CSV files and PNG plots.

Everything is recomputed from the shards on disk (eval results and the generations they came
from), so a resumed or re-run eval always reports on all its results.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from stepprune.evaluation.metrics import bootstrap_ci, l_acc, mean_pass_at_k

log = logging.getLogger(__name__)

ALL = "all"


def _group_expr():
    import polars as pl

    return pl.col("source") + "\x00" + pl.col("problem_id")


def _ci(values, g, cfg) -> tuple[float, float]:
    """Bootstrap CI that resamples whole problems (samples of one problem are not independent)."""
    groups = g["_group"].to_numpy()
    return bootstrap_ci(
        values, level=cfg.ci_level, n_boot=cfg.bootstrap, seed=cfg.seed, groups=groups
    )


def curve_table(results, cfg):
    """One row per (source, strategy, kappa), plus source="all": accuracy, CI, tokens, L-Acc."""
    import polars as pl

    # Clusters are problems of a real source, also in the pooled "all" rows.
    results = results.with_columns(_group=_group_expr())
    both = pl.concat([results, results.with_columns(source=pl.lit(ALL))])
    rows = []
    for (source, strategy, kappa), g in both.group_by(
        ["source", "strategy", "kappa"], maintain_order=True
    ):
        correct = g["correct"].cast(pl.Float64).to_numpy()
        low, high = _ci(correct, g, cfg)
        n_samples = int(
            g.filter(pl.col("seed") == g["seed"].min()).group_by("_group").len()["len"].min()
        )
        kept = float(g["kept_thinking_tokens"].mean())
        orig = float(g["original_thinking_tokens"].mean())
        acc = float(correct.mean())
        rows.append(
            dict(
                source=source,
                strategy=strategy,
                kappa=kappa,
                n=g.height,
                accuracy=acc,
                ci_low=low,
                ci_high=high,
                original_accuracy=float(g["original_correct"].mean()),
                kept_thinking_tokens=kept,
                original_thinking_tokens=orig,
                token_reduction_pct=100.0 * (1.0 - kept / orig) if orig else 0.0,
                mean_skipped=float(g["n_skipped"].mean()),
                l_acc=l_acc(acc, kept, orig),
                samples_per_problem=n_samples,
                # Pass@n over each problem's n sampled CoTs, pruned alike; n = the fewest any
                # problem has. With one CoT per problem it equals accuracy, so it is left out.
                pass_at_n=_pass_at_n(g, n_samples),
            )
        )
    return pl.DataFrame(rows, infer_schema_length=None).sort(["source", "strategy", "kappa"])


def _pass_at_n(g, n_samples: int):
    """Pass@n over each problem's n sampled CoTs, pruned alike (one selection seed); with one
    CoT per problem it equals accuracy, so it is left out."""
    import polars as pl

    if n_samples <= 1:
        return None
    first = g.filter(pl.col("seed") == g["seed"].min())
    return mean_pass_at_k(first["_group"], first["correct"].cast(pl.Float64).to_numpy(), n_samples)


def paired_differences(results, cfg, against: str = "low"):
    """Accuracy of ``against`` minus each other strategy at equal kappa, on the same
    trajectories, with a paired bootstrap CI: the honest test of "low beats random"."""
    import polars as pl

    # a strategy run at several seeds counts once per trajectory: the mean over its seeds
    wide = (
        results.with_columns(pl.col("correct").cast(pl.Float64))
        .pivot(
            on="strategy",
            index=["source", "problem_id", "sample_index", "kappa"],
            values="correct",
            aggregate_function="mean",
        )
        .with_columns(_group=_group_expr())
    )
    rows = []
    others = [s for s in cfg.strategies if s != against and s in wide.columns]
    if against not in wide.columns:
        return pl.DataFrame()
    for other in others:
        for (kappa,), g in wide.drop_nulls([against, other]).group_by(["kappa"]):
            diff = (g[against].cast(pl.Float64) - g[other].cast(pl.Float64)).to_numpy()
            low, high = _ci(diff, g, cfg)
            rows.append(
                dict(
                    comparison=f"{against} - {other}",
                    kappa=kappa,
                    n=g.height,
                    difference=float(diff.mean()),
                    ci_low=low,
                    ci_high=high,
                )
            )
    return pl.DataFrame(rows).sort(["comparison", "kappa"]) if rows else pl.DataFrame()


def plain_table(files, cfg):
    """The papers' per-benchmark format for the unpruned run: ACC / LEN / L-Acc (and Pass@k)."""
    import polars as pl
    import pyarrow.parquet as pq

    cols = ["problem_id", "source", "correct", "n_tokens", "n_thinking_tokens"]
    gen = pl.concat([pl.from_arrow(pq.read_table(f, columns=cols)) for f in files])
    base = _baseline_lengths(cfg.baseline) if cfg.baseline else {}
    rows = []
    for (source,), g in gen.group_by(["source"], maintain_order=True):
        n_samples = int(g.group_by("problem_id").len()["len"].min())
        acc = float(g["correct"].mean())
        length = float(g["n_tokens"].mean())
        row = dict(
            source=source,
            n=g.height,
            samples_per_problem=n_samples,
            acc=acc,
            len=length,
            thinking_len=float(g["n_thinking_tokens"].mean()),
            l_acc=l_acc(acc, length, base[source]) if source in base else None,
        )
        if n_samples > 1:
            row[f"pass@{n_samples}"] = mean_pass_at_k(g["problem_id"], g["correct"], n_samples)
        rows.append(row)
    return pl.DataFrame(rows).sort("source")


def _baseline_lengths(source_dir: str) -> dict:
    import polars as pl

    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    table = pl.from_arrow(read_table(source_dir, GENERATIONS, columns=["source", "n_tokens"]))
    return dict(table.group_by("source").agg(pl.col("n_tokens").mean()).iter_rows())


def _markdown(df, digits: int = 3) -> str:
    df = df.select([c for c in df.columns if df[c].null_count() < df.height])  # all-empty: out
    header = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    lines = [header, sep]
    for row in df.iter_rows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(cfg, files) -> dict:
    """Tables (CSV, Markdown), plots (PNG) and summary.json in ``cfg.out``; returns the summary."""
    import polars as pl

    from stepprune.evaluation.answer_prompts import generation_models
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table, shard_files

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plain = plain_table(files, cfg)
    plain.write_csv(out / "plain.csv")
    sections = ["# stepprune eval", "", "## Unpruned run (ACC / LEN / L-Acc)", "", _markdown(plain)]
    summary = {"plain": plain.to_dicts(), "results": 0, "generated_by": generation_models(files)}
    cots = f"CoTs generated by {', '.join(summary['generated_by'])}"
    who = f"{cots}."
    if shard_files(out / "results"):
        results = pl.from_arrow(read_table(out / "results", EVAL_RESULTS))
        # A result computed twice (a run killed between its write and its flush) counts once.
        results = results.unique(subset=list(EVAL_RESULTS.key), keep="last", maintain_order=True)
        summary["answering_model"] = sorted(results["model"].unique().to_list())
        who = f"Answers by {', '.join(summary['answering_model'])} from {cots}."
        curve = curve_table(results, cfg)
        diffs = paired_differences(results, cfg)
        curve.write_csv(out / "curve.csv")
        if diffs.height:
            diffs.write_csv(out / "paired.csv")
        else:
            (out / "paired.csv").unlink(missing_ok=True)
        from stepprune.evaluation.plots import plot_accuracy, plot_tokens

        plot_accuracy(curve, out / "accuracy_vs_kappa.png", cfg.ci_level)
        plot_tokens(curve, out / "tokens_vs_kappa.png")
        sections += [
            "",
            "## Accuracy after pruning (all sources)",
            "",
            _markdown(curve.filter(pl.col("source") == ALL).drop("source")),
        ]
        if diffs.height:
            sections += ["", "## Paired differences (same trajectories)", "", _markdown(diffs)]
        sections += _honest_sections(results, files, curve, cfg, out, summary)
        summary.update(
            results=results.height, curve=curve.filter(pl.col("source") == ALL).to_dicts()
        )
    sections[1:1] = ["", who]
    (out / "summary.md").write_text("\n".join(sections) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return summary


def _honest_sections(results, files, curve, cfg, out: Path, summary: dict) -> list[str]:
    """The equal-cost tables (``evaluation.honest``), their CSVs, the frontier plot."""
    from stepprune.evaluation import honest
    from stepprune.evaluation.plots import plot_frontier

    steps = honest.generation_steps(files)
    tables = {
        "matched": (
            "Matched budgets: thinking tokens removed minus low's",
            honest.matched_gap(results),
        ),
        "restatement": (
            "Does the kept thinking still state the answer?",
            honest.restatement(results),
        ),
        "step_classes": ("Which steps each strategy prunes", honest.step_classes(results, steps)),
        "scores": ("Step scores against `sum` (Spearman)", honest.score_correlations(steps)),
    }
    line = honest.headline(results, cfg)
    summary["headline"] = line
    sections = ["", "## At equal cost", "", line]
    for name, (title, table) in tables.items():
        if table.height:
            table.write_csv(out / f"{name}.csv")
            sections += ["", f"### {title}", "", _markdown(table)]
    plot_frontier(curve, out / "frontier.png", cfg.ci_level)
    return sections


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def format_report(summary: dict) -> str:
    """The CLI's short text version of summary.json."""
    lines = [f"{'source':<18}{'n':>6}{'ACC':>8}{'LEN':>9}"]
    for row in summary["plain"]:
        lines.append(f"{row['source']:<18}{row['n']:>6}{row['acc']:>8.3f}{row['len']:>9.1f}")
    if summary.get("headline"):
        lines.append(f"\n{summary['headline']}")
    if summary.get("curve"):
        lines.append(f"\n{summary['results']} pruned-CoT results (all sources):")
        lines.append(f"{'strategy':<15}{'kappa':>6}{'acc':>8}{'95% CI':>16}{'kept tok':>10}")
        for r in summary["curve"]:
            ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            lines.append(
                f"{r['strategy']:<15}{r['kappa']:>6.2f}{r['accuracy']:>8.3f}{ci:>16}"
                f"{r['kept_thinking_tokens']:>10.1f}"
            )
    return "\n".join(lines)
