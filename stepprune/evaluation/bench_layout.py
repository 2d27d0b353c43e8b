"""Where bench keeps its work: ``OUT/generations/<model>/<benchmark>/`` holds one (model,
benchmark) pair's generations shards and its ``timing.json``; a benchmark's directory name is a
built-in set's name or the file's stem. Shared by the bench stage and its report, with the rows
of a pair that this run counts (``counted_rows``)."""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_entry_name(kind: str, name: str) -> None:
    """A model's or baseline's name is a directory under ``OUT/generations``: a path-safe word,
    so that '..', '.x' or 'a/b' cannot leave it."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r}: letters, digits, '.', '_' and '-' only, not starting with '.'"
        )


def benchmark_name(source: str) -> str:
    """A benchmark's directory name: a built-in set's name, else the file's stem."""
    return Path(source).stem if Path(source).suffix else source


def pair_dir(out, model: str, benchmark: str) -> Path:
    """The directory of one (model, benchmark name) pair."""
    return Path(out) / "generations" / model / benchmark


def saved_rows(out) -> int:
    """Generated rows on disk, over every pair."""
    from stepprune.shards import count_rows

    return sum(count_rows(d) for d in Path(out).glob("generations/*/*"))


def counted_rows(cfg, name: str, source: str, columns: list[str]):
    """One pair's rows that this run counts: its ``limit`` first problems, samples below its
    ``n_samples`` (rows an earlier run made beyond them stay out), as polars."""
    import polars as pl

    from stepprune.data.load import load_problems
    from stepprune.schema import GENERATIONS
    from stepprune.shards import read_table

    ids = [p.id for p in load_problems(source, data_dir=cfg.data_dir, limit=cfg.limit)]
    cols = list(dict.fromkeys(["problem_id", "sample_index", *columns]))
    table = read_table(pair_dir(cfg.out, name, benchmark_name(source)), GENERATIONS, cols)
    return pl.from_arrow(table).filter(
        pl.col("problem_id").is_in(ids) & (pl.col("sample_index") < cfg.n_samples)
    )
