"""Where bench keeps its work: ``OUT/generations/<model>/<benchmark>/`` holds one (model,
benchmark) pair's generations shards and its ``timing.json``; a benchmark's directory name is a
built-in set's name or the file's stem. Shared by the bench stage and its report."""

from __future__ import annotations

from pathlib import Path


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
