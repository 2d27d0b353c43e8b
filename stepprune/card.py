"""Dataset cards: the README.md written beside output shards (schema, provenance, figures)."""

from __future__ import annotations

import json
from pathlib import Path

# The card's YAML header: hub metadata, and configs so that datasets.load_dataset(dir) works.
METADATA = """---
license: other
task_categories:
- text-generation
tags:
- chain-of-thought
- reasoning
- stepprune
configs:
- config_name: default
  data_files: "*.parquet"
---"""
SKIP_NOTE = """**The `[SKIP]` token.** Most tokenizers read `[SKIP]` as plain text, several pieces
(four for SmolLM2), so a model trained on these rows as they are learns a four-token word.
Add it as one special token first, then grow the embeddings:
`tokenizer.add_special_tokens({"additional_special_tokens": ["[SKIP]"]})` and
`model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)`. `stepprune sft` does
this and starts the new rows at the mean embedding (`stepprune/train/skip_token.py`)."""


def _table(head: tuple[str, str], rows: list[tuple[str, object]]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])


def _settings(cfg) -> list[tuple[str, object]]:
    verified = []
    if cfg.kappa == "verified":
        verified = [
            ("kappa verified by", f"{cfg.eval} (strategy {cfg.strategy}, seed {cfg.seed})"),
            ("unverified rows", cfg.unverified),
        ]
    return [
        ("kappa", cfg.kappa),
        *verified,
        ("strategy", cfg.strategy),
        ("step score", cfg.score),
        ("budget", cfg.budget),
        ("protect first/last step", cfg.protect_ends),
        ("merge consecutive [SKIP]", cfg.merge_skips),
        ("seed", cfg.seed),
        ("correct only", cfg.correct_only),
        ("max tokens", cfg.max_tokens),
        ("compression", cfg.compression),
    ]


def _counts(summary: dict) -> list[tuple[str, object]]:
    red = summary["token_reduction_pct"]
    steps = f"{summary['mean_steps']:.2f} / {summary['mean_skipped']:.2f}"
    spread = f"{red['p10']:.1f}% / {red['p50']:.1f}% / {red['p90']:.1f}%"
    return [
        ("trajectories in", summary["rows_in"]),
        ("dropped: incorrect", summary["dropped_incorrect"]),
        ("dropped: too long", summary["dropped_long"]),
        ("rows out", summary["rows_out"]),
        ("mean steps / skipped", steps),
        ("thinking-token reduction, mean", f"{red['mean']:.1f}%"),
        ("reduction p10 / p50 / p90", spread),
    ]


def write_card(out_dir: Path, cfg, stats, inputs: list[Path], name: str | None = None) -> None:
    """README.md and manifest.json for a pruned dataset in ``out_dir``, which will be renamed
    to ``name`` (the staging directory's own name must not reach the card)."""
    import numpy as np
    import pyarrow.parquet as pq

    from stepprune.schema import PRUNED

    summary = stats.summary()
    sources = sorted({str(f.parent) for f in inputs})
    models = set()
    for f in inputs:
        models.update(pq.read_table(f, columns=["model"]).column("model").unique().to_pylist())
    hist, edges = np.histogram(stats.reduction(), bins=10, range=(0, 100))
    bins = [(f"{edges[i]:.0f}–{edges[i + 1]:.0f}%", hist[i]) for i in range(len(hist))]
    text = f"""{METADATA}
# stepprune pruned chains of thought

Schema `{PRUNED.name}` v{PRUNED.version} (columns: data/README.md of stepprune).
Made by `stepprune prune` from {", ".join(sources)} (models: {", ".join(sorted(models))}).

{_table(("setting", "value"), _settings(cfg))}

{_table(("count", "value"), _counts(summary))}

Thinking-token reduction per row:

{_table(("reduction", "rows"), bins)}

Kappa per row (one value unless `--kappa verified`):

{_table(("kappa", "rows"), list(summary["kappa_counts"].items()))}

Load with `datasets.load_dataset("parquet", data_files="{name or out_dir.name}/*.parquet")` or
`polars.read_parquet("{name or out_dir.name}/*.parquet")`. `prompt`/`completion` are SFT-ready.

{SKIP_NOTE}

License: each row keeps its problem set's license (GSM8K, MATH and the others) and the
generating model's terms; see those sources.
"""
    (out_dir / "README.md").write_text(text)
    files = sorted(out_dir.glob("*.parquet"))
    manifest = {
        "schema": PRUNED.name,
        "schema_version": PRUNED.version,
        "shards": [{"file": f.name, "rows": pq.read_metadata(f).num_rows} for f in files],
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "summary": summary,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
