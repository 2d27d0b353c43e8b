"""Exact rescoring of generations rows: teacher-forced entropies and log-probs replace a top-k
backend's, steps re-summed, the sampling record noting who rescored and in which dtype. Rows go
in groups (one rescorer call each) into an output that holds one precision. Used by generate
(--rescore), score and the Ray score workers."""

from __future__ import annotations

import json
from pathlib import Path


def _rescored_row(row: dict, ent: list[float], lp: list[float], label: str, dtype: str) -> dict:
    from stepprune.cot.entropy import step_entropy

    steps = []
    for s in row["steps"]:
        span = (s["token_start"], s["token_end"])
        total, mean = step_entropy(ent, span), step_entropy(ent, span, "mean")
        steps.append({**s, "entropy_sum": total, "entropy_mean": mean})
    sampling = {**json.loads(row["sampling"]), "rescored_by": label, "rescore_dtype": dtype}
    return {
        **row,
        "token_entropies": ent,
        "token_logprobs": lp,
        "steps": steps,
        "entropy_source": "rescored",
        "sampling": json.dumps(sampling, sort_keys=True),
    }


def rescore_rows(rows, rescorer, label: str, cfg, tag: str = "00000") -> float:
    """Rescore generations rows not yet in ``cfg.out`` into it, a group of rows per batch plan;
    returns the seconds spent. ``cfg`` gives out, rows_per_shard, flush_seconds and (optionally)
    group_rows; ``tag`` names the shards (generate's shard tag: parallel shards never collide)."""
    import time

    from tqdm.auto import tqdm

    from stepprune.schema import GENERATIONS
    from stepprune.shards import ShardWriter, existing_keys

    done = existing_keys(cfg.out, GENERATIONS)
    check_dtype(cfg.out, rescorer.dtype_name)
    writer = ShardWriter(
        cfg.out,
        GENERATIONS,
        rows_per_shard=cfg.rows_per_shard,
        flush_seconds=cfg.flush_seconds,
        tag=tag,
    )
    bar = tqdm(unit="cot", desc="rescore", dynamic_ncols=True)
    started, n_tok = time.monotonic(), 0
    with writer:
        for group in row_groups(rows, done, size=getattr(cfg, "group_rows", 256)):
            writer.write(rescore_group(group, rescorer, label, progress=bar))
            writer.maybe_flush()
            n_tok += sum(len(r["prompt_token_ids"]) + len(r["token_ids"]) for r in group)
            bar.set_postfix(tok_s=f"{n_tok / (time.monotonic() - started):.0f}")
    bar.close()
    return time.monotonic() - started


def rescore_group(group: list[dict], rescorer, label: str, progress=None) -> list[dict]:
    """The rows of ``group`` with exact entropies (one rescorer call; local and Ray workers)."""
    scored = rescorer.score([(r["prompt_token_ids"], r["token_ids"]) for r in group], progress)
    dtype = rescorer.dtype_name
    return [_rescored_row(r, e, lp, label, dtype) for r, (e, lp) in zip(group, scored, strict=True)]


def first_row(out) -> dict | None:
    """The sampling record and model of the first row in ``out``; None when it holds none."""
    import pyarrow.parquet as pq

    from stepprune.shards import shard_files

    files = shard_files(out) if Path(out).is_dir() else []
    if not files:
        return None
    batch = next(pq.ParquetFile(files[0]).iter_batches(1, columns=["model", "sampling"]))
    row = batch.to_pylist()[0]
    return {**json.loads(row["sampling"]), "model": row["model"]}


def check_dtype(out, dtype: str) -> None:
    """Refuse to add rows rescored in another dtype to ``out`` (one output, one precision)."""
    old = (first_row(out) or {}).get("rescore_dtype")
    if old is not None and old != dtype:
        raise ValueError(
            f"{out}: holds rows rescored in {old}; resume with --dtype {old} or use another --out"
        )


def row_groups(rows, done: set, size: int):
    group = []
    for row in rows:
        if (row["problem_id"], row["sample_index"]) in done:
            continue
        group.append(row)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
