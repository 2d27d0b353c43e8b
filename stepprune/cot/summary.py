"""End-of-run summaries: the figures a stage reports once it is done, read back from its shards.

Summaries are computed from what is on disk (not from in-memory counters), so a resumed run
reports on the whole output, and the figures always match what other projects will load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def summarize_generations(out_dir: str | Path) -> dict:
    import pyarrow.compute as pc

    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    cols = [
        "correct",
        "n_tokens",
        "n_thinking_tokens",
        "n_steps",
        "finish_reason",
        "token_entropies",
        "entropy_source",
        "steps",
    ]
    table = read_table(out_dir, GENERATIONS, columns=cols)
    n = table.num_rows
    if n == 0:
        return {"rows": 0}
    ent = pc.list_flatten(table["token_entropies"]).to_numpy(zero_copy_only=False)
    q = np.percentile(ent, [10, 50, 90]) if ent.size else [float("nan")] * 3
    return {
        "rows": n,
        "accuracy": float(np.mean(table["correct"].to_numpy(zero_copy_only=False))),
        "mean_tokens": float(pc.mean(table["n_tokens"]).as_py()),
        "mean_thinking_tokens": float(pc.mean(table["n_thinking_tokens"]).as_py()),
        "mean_steps": float(pc.mean(table["n_steps"]).as_py()),
        "truncated": int(pc.sum(pc.equal(table["finish_reason"], "length")).as_py() or 0),
        "entropy_sources": sorted(set(table["entropy_source"].to_pylist())),
        **_skip_stats(table),
        "token_entropy": {
            "mean": float(ent.mean()) if ent.size else float("nan"),
            "p10": float(q[0]),
            "p50": float(q[1]),
            "p90": float(q[2]),
        },
    }


def _skip_stats(table) -> dict:
    """[SKIP] steps a model wrote itself (after SFT): r = #SKIP / #steps, over rows with steps."""
    import pyarrow.compute as pc

    n_steps = table["n_steps"].to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(table["steps"])
    skips = pc.struct_field(flat, "is_skip").to_numpy(zero_copy_only=False).astype(np.int64)
    row_of = np.repeat(np.arange(table.num_rows), n_steps)
    n_skip = np.bincount(row_of, weights=skips, minlength=table.num_rows)
    has = n_steps > 0
    ratio = float((n_skip[has] / n_steps[has]).mean()) if has.any() else 0.0
    return {"mean_skip_ratio": ratio, "rows_with_skip": int((n_skip > 0).sum())}


def format_summary(summary: dict) -> str:
    if not summary.get("rows"):
        return "no rows"
    te = summary["token_entropy"]
    return "\n".join(
        [
            f"rows            {summary['rows']}",
            f"accuracy        {summary['accuracy']:.3f}",
            f"mean tokens     {summary['mean_tokens']:.1f} "
            f"(thinking {summary['mean_thinking_tokens']:.1f}, truncated {summary['truncated']})",
            f"mean steps      {summary['mean_steps']:.2f} (skip ratio "
            f"{summary['mean_skip_ratio']:.3f}; {summary['rows_with_skip']} rows with [SKIP])",
            f"token entropy   mean {te['mean']:.3f}  p10 {te['p10']:.3f}  "
            f"p50 {te['p50']:.3f}  p90 {te['p90']:.3f} nats",
            f"entropy source  {', '.join(summary['entropy_sources'])}",
            *_timing_lines(summary),
            *_truncation_warning(summary),
        ]
    )


def _truncation_warning(summary: dict) -> list[str]:
    """More than half the rows cut at max_new_tokens: their CoTs end without an answer."""
    cut, rows = summary["truncated"], summary["rows"]
    if 2 * cut <= rows:
        return []
    return [
        f"warning: {cut} of {rows} rows ({100 * cut / rows:.0f}%) stopped at max_new_tokens, "
        "cut before their answer; raise --max-new-tokens"
    ]


def _timing_lines(summary: dict) -> list[str]:
    """This run's generation and rescoring seconds (a resumed run: only what it did itself)."""
    gen, res = summary.get("generation_seconds"), summary.get("rescoring_seconds")
    if gen is None and res is None:
        return []
    parts = [f"generation {gen:.1f} s"] if gen is not None else []
    parts += [f"exact rescoring {res:.1f} s"] if res is not None else []
    if gen and res is not None:
        parts.append(f"rescoring/generation {res / gen:.2f}x")
    return [f"time            {', '.join(parts)}"]
