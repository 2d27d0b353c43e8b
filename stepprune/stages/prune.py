"""The prune stage: generations shards -> [SKIP]-compressed ``pruned`` shards, SFT-ready.

Shard by shard (memory bounded by one input shard), vectorised with polars. All inputs are
checked before anything is written; output goes to a hidden staging directory that is renamed
into place only when every shard and the dataset card are written, so a failed or killed run
leaves no output at all, and an existing output is replaced only with ``overwrite``.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROW_COLUMNS = [
    "problem_id",
    "sample_index",
    "source",
    "problem",
    "gold_answer",
    "model",
    "entropy_source",
    "correct",
    "thinking",
    "thinking_char_start",
    "answer_text",
    "n_thinking_tokens",
    "n_tokens",
    "prompt",
    "steps",
]


@dataclass
class PruneConfig:
    input: str = ""
    out: str = "runs/prune"
    kappa: float = 0.8
    strategy: str = "low"  # low | high | random | token
    score: str = "sum"  # sum | mean of token entropies
    budget: str = "steps"  # steps | tokens
    protect_ends: bool = False
    merge_skips: bool = False
    seed: int = 0
    correct_only: bool = True
    max_tokens: int | None = None  # drop CoTs longer than this (the paper: 4096)
    tokenizer: str | None = None  # token strategy only; default: the embedded model's
    overwrite: bool = False
    # zstd: smallest files. Compressing the three text columns is most of prune's time, so
    # "lz4" (about 1.5x larger) or "none" (about 3x) trade disk for speed; every reader copes.
    compression: str = "zstd"

    def spec(self):
        from stepprune.prune import PruneSpec

        return PruneSpec(
            self.kappa,
            self.strategy,
            self.score,
            self.budget,
            self.protect_ends,
            self.merge_skips,
            self.seed,
        )


def run(cfg: PruneConfig) -> dict:
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from stepprune.card import write_card
    from stepprune.schema import GENERATIONS, PRUNED, check_file_schema, validate_table
    from stepprune.shards import shard_files

    spec = cfg.spec()
    files = shard_files(cfg.input) if cfg.input else []
    if not files:
        raise FileNotFoundError(f"no generations shards in {cfg.input!r}")
    for f in files:  # every input is checked before any output exists
        check_file_schema(pq.read_schema(f), GENERATIONS, f)
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    tokenizer = _tokenizer(cfg) if spec.strategy == "token" else None
    staging = _staging_dir(out)
    stats = PruneStats()
    # Encoding and zstd-compressing a shard's text columns costs more than pruning it, and it
    # releases the GIL: one writer thread overlaps shard i's write with shard i+1's pruning,
    # so at most two shards are in memory at once.
    # Leaving the executor waits for the last write, so cleanup never races a writing thread.
    try:
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for i, f in enumerate(tqdm(files, unit="shard", desc="prune", dynamic_ncols=True)):
                table = validate_table(prune_file(f, spec, cfg, tokenizer, stats), PRUNED, str(f))
                if pending is not None:
                    pending.result()
                pending = writer.submit(
                    _write, table, staging / f"part-{i:05d}.parquet", cfg.compression
                )
                del table
            if pending is not None:
                pending.result()
        write_card(staging, cfg, stats, files)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stats.summary()


def _write(table, path: Path, compression: str) -> None:
    from stepprune.shards import write_table_atomic

    write_table_atomic(table, path, compression=compression)
    del table
    _release_memory()


def _release_memory() -> None:
    """Hand freed shard buffers back to the OS between shards.

    Without this, allocator caches (Arrow's mimalloc pool, glibc's per-thread arenas) keep
    each shard's peak around and RSS climbs to several shards' worth (2.9 GB instead of 0.9 GB
    on the 70k-trajectory benchmark).
    """
    import contextlib
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _staging_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.tmp-*"):
        log.info("removing %s left by a killed run", old)
        shutil.rmtree(old, ignore_errors=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def _tokenizer(cfg: PruneConfig):
    from transformers import AutoTokenizer

    from stepprune.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer))


class PruneStats:
    """Counts and per-row figures accumulated over shards, for the summary and the card."""

    def __init__(self) -> None:
        self.rows_in = self.rows_out = self.dropped_incorrect = self.dropped_long = 0
        self.ratios: list = []
        self.steps: list = []
        self.skipped: list = []

    def add(self, table) -> None:
        self.rows_out += table.num_rows
        self.ratios.append(table.column("compression_ratio").to_numpy())
        self.steps.append(table.column("n_steps").to_numpy())
        self.skipped.append(table.column("n_skipped").to_numpy())

    def summary(self) -> dict:
        import numpy as np

        ratio = np.concatenate(self.ratios) if self.ratios else np.zeros(0)
        reduction = 100 * (1 - ratio)
        pct = np.percentile(reduction, [10, 50, 90]).tolist() if ratio.size else [0.0] * 3

        def mean(xs):
            return float(np.concatenate(xs).mean()) if ratio.size else 0.0

        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped_incorrect": self.dropped_incorrect,
            "dropped_long": self.dropped_long,
            "mean_steps": mean(self.steps),
            "mean_skipped": mean(self.skipped),
            "token_reduction_pct": {
                "mean": float(reduction.mean()) if ratio.size else 0.0,
                "p10": pct[0],
                "p50": pct[1],
                "p90": pct[2],
            },
        }


def _filter(df, cfg: PruneConfig, stats: PruneStats):
    import polars as pl

    stats.rows_in += df.height
    if cfg.correct_only:
        keep = df.filter(pl.col("correct"))
        stats.dropped_incorrect += df.height - keep.height
        df = keep
    if cfg.max_tokens is not None:
        keep = df.filter(pl.col("n_tokens") <= cfg.max_tokens)
        stats.dropped_long += df.height - keep.height
        df = keep
    return df


def prune_file(path: Path, spec, cfg: PruneConfig, tokenizer, stats: PruneStats):
    """One generations shard -> one pruned Arrow table."""
    import polars as pl
    import pyarrow.parquet as pq

    cols = ROW_COLUMNS + (["token_ids", "token_entropies"] if tokenizer is not None else [])
    df = pl.from_arrow(pq.read_table(path, columns=cols)).with_row_index("_row")
    df = _filter(df, cfg, stats).with_row_index("_r")
    table = _output(prune_frame(df, spec, tokenizer, path), spec)
    stats.add(table)
    return table


def prune_frame(df, spec, tokenizer, origin) -> object:
    """``df`` (rows with _row, _r, steps, thinking...) plus the compression columns of ``spec``.

    The one pruning path shared by ``prune`` and ``eval``; ``origin`` names the file in errors.
    """
    import polars as pl

    from stepprune.prune import compress, select

    steps = df.select("_r", "steps").explode("steps").drop_nulls("steps").unnest("steps")
    bad = steps.filter(pl.col("entropy_sum").is_nan() | pl.col("entropy_mean").is_nan())
    if bad.height:
        row = df.filter(pl.col("_r") == bad["_r"][0])["_row"][0]
        raise ValueError(f"{origin}: row {row}: step entropy is NaN; no output was written")
    if spec.strategy == "random":
        import zlib

        keys = [f"{a}\x00{b}" for a, b in zip(df["problem_id"], df["sample_index"], strict=True)]
        hashes = pl.Series("_rowhash", [zlib.crc32(k.encode()) for k in keys], dtype=pl.UInt64)
        steps = steps.join(df.select("_r", hashes), on="_r", how="left", maintain_order="left")
    mask = select(steps, spec)
    comp = compress(df, steps, mask, spec.merge_skips)
    if tokenizer is not None and spec.strategy == "token":
        from stepprune.token_prune import token_compress

        comp = token_compress(df, comp, tokenizer)
    return df.join(comp, on="_r", how="left", maintain_order="left")


def _output(df, spec):
    import polars as pl

    answer = pl.col("answer_text").str.strip_chars()
    inner = pl.col("compressed_thinking").str.strip_chars()
    opened = pl.col("prompt").str.strip_chars_end().str.ends_with("<think>")
    completion = (
        pl.when(opened).then(inner).otherwise(pl.lit("<think>\n") + inner)
        + pl.lit("\n</think>\n\n")
        + answer
    )
    n_think = pl.col("n_thinking_tokens")
    ratio = pl.when(n_think > 0).then(pl.col("kept_thinking_tokens") / n_think).otherwise(1.0)
    return df.select(
        "problem_id",
        "sample_index",
        "source",
        "problem",
        "gold_answer",
        "model",
        "entropy_source",
        "correct",
        pl.col("thinking").alias("original_thinking"),
        "compressed_thinking",
        "answer_text",
        "skip_mask",
        n_steps=pl.col("skip_mask").list.len().cast(pl.Int32),
        n_skipped="n_skipped",
        original_thinking_tokens=n_think,
        kept_thinking_tokens="kept_thinking_tokens",
        compression_ratio=ratio.cast(pl.Float32),
        kappa=pl.lit(spec.kappa, pl.Float32),
        strategy=pl.lit(spec.strategy),
        score=pl.lit(spec.score),
        budget=pl.lit(spec.budget),
        seed=pl.lit(spec.seed, pl.Int64),
        prompt="prompt",
        completion=completion,
    ).to_arrow()
