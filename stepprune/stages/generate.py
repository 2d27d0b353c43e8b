"""The generate stage: problems -> chains of thought with per-token entropy -> generations shards.

Resumable by construction: the (problem_id, sample_index) keys already present in the output
directory are skipped, shards appear atomically, and buffered rows are flushed at least every
``flush_seconds``, so a SIGKILL loses at most that much work and never duplicates a row.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from stepprune.cot.steps import DEFAULT_STEP_PATTERN
from stepprune.generation.engine import generate_batch, open_engine
from stepprune.generation.sampling import RESUME_KEYS, SamplingOptions
from stepprune.scaleout.options import ExecutorOptions

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig(SamplingOptions, ExecutorOptions):
    problems: str = "mawps_singleop"
    out: str = "runs/generate"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    data_dir: str | None = None
    problem_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    limit: int | None = None
    skip_bad: bool = False
    step_pattern: str = DEFAULT_STEP_PATTERN
    rows_per_shard: int = 1000
    flush_seconds: float = 60.0
    num_shards: int = 1
    shard_index: int = 0
    rescore: bool = False  # after a top-k backend, replace entropies by exact teacher-forced ones
    rescore_dtype: str = "auto"  # auto: the generating engine's dtype; float32: as before
    rescore_token_budget: int | None = None  # padded tokens per pass; None: 16384 GPU, 1 CPU
    grade_timeout: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        ExecutorOptions.__post_init__(self)
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index {self.shard_index} not in [0, {self.num_shards})")
        if self.executor == "ray" and self.num_shards > 1:
            raise ValueError("--executor ray balances the problems itself: drop --num-shards")
        if self.executor == "ray" and self.rescore:
            raise ValueError(
                "--executor ray does not rescore: drop --rescore and run "
                "`stepprune score --executor ray` on the top-k rows afterwards"
            )
        try:
            re.compile(self.step_pattern)
        except re.error as e:
            msg = f"step_pattern {self.step_pattern!r}: not a regular expression ({e})"
            raise ValueError(msg) from e


def pending_items(cfg: GenerateConfig, problems, done: set[tuple]) -> list[tuple]:
    """(problem, sample_index) pairs of this shard that the output does not hold yet."""
    mine = [p for i, p in enumerate(problems) if i % cfg.num_shards == cfg.shard_index]
    return [(p, s) for p in mine for s in range(cfg.n_samples) if (p.id, s) not in done]


def run(cfg: GenerateConfig) -> dict:
    from stepprune.cot.summary import summarize_generations
    from stepprune.data.load import load_problems
    from stepprune.runlock import RunLock
    from stepprune.scaleout.cluster import connect_first

    connect_first(cfg)
    problems = load_problems(
        cfg.problems,
        data_dir=cfg.data_dir,
        problem_field=cfg.problem_field,
        answer_field=cfg.answer_field,
        id_field=cfg.id_field,
        limit=cfg.limit,
        skip_bad=cfg.skip_bad,
    )
    if not problems:
        raise ValueError(f"{cfg.problems}: no problems to generate for (limit {cfg.limit})")
    _check_resume(cfg)
    tag = f"{cfg.shard_index:03d}of{cfg.num_shards:03d}"
    with RunLock(cfg.out, f"generate-{tag}"):
        return {**_run_locked(cfg, problems), **summarize_generations(cfg.out)}


def _run_locked(cfg: GenerateConfig, problems) -> dict:
    """Generate what ``out`` lacks (and rescore staged rows); this run's timing."""
    from stepprune.schema import GENERATIONS
    from stepprune.shards import existing_keys, shard_files

    staging = staging_dir(cfg)
    done = existing_keys(cfg.out, GENERATIONS)
    if staging is not None:
        done |= existing_keys(staging, GENERATIONS)
    items = pending_items(cfg, problems, done)
    log.info("%d problems, %d (problem, sample) items to generate", len(problems), len(items))
    timing, backend = {}, None
    if items and cfg.executor == "ray":
        from stepprune.scaleout.workers import generate_on_ray

        timing["generation_seconds"] = generate_on_ray(cfg, items)
    elif items:
        backend, timing["generation_seconds"] = _generate_items(cfg, items, staging or cfg.out)
    if staging is not None and staging.is_dir() and shard_files(staging):
        timing["rescoring_seconds"] = _rescore_staged(cfg, staging, backend)
    if "generation_seconds" in timing and "rescoring_seconds" in timing:
        timing["rescoring_ratio"] = timing["rescoring_seconds"] / timing["generation_seconds"]
    return timing


def staging_dir(cfg: GenerateConfig) -> Path | None:
    """Where a top-k run that will be rescored keeps its rows until they are exact."""
    if not cfg.rescore or cfg.backend == "hf":  # hf entropies are exact already
        return None
    return Path(cfg.out) / f".rescore-pending-{cfg.shard_index:03d}of{cfg.num_shards:03d}"


def _rescore_staged(cfg: GenerateConfig, staging: Path, backend) -> float:
    """Close the engine, rescore the staged rows into ``out`` exactly, then drop the staging."""
    import shutil

    from stepprune.backends.rescore import Rescorer
    from stepprune.generation.rescoring import rescore_rows
    from stepprune.models import model_label, resolve_model
    from stepprune.schema import GENERATIONS
    from stepprune.shards import iter_batches

    dtype = cfg.rescore_dtype
    if dtype == "auto":  # the engine's resolved dtype, recorded in every staged row
        dtype = _staged_engine_dtype(staging)
    if backend is not None:
        backend.close()
    log.info("rescoring in %s with the engine closed", dtype)
    rescorer = Rescorer(
        resolve_model(cfg.model), dtype=dtype, token_budget=cfg.rescore_token_budget
    )
    rows = (r for _, b in iter_batches(staging, GENERATIONS, batch_size=256) for r in b.to_pylist())
    tag = f"{cfg.shard_index:03d}of{cfg.num_shards:03d}"
    seconds = rescore_rows(rows, rescorer, model_label(cfg.model), cfg, tag=tag)
    shutil.rmtree(staging)
    return seconds


def _staged_engine_dtype(staging: Path) -> str:
    import json

    import pyarrow.parquet as pq

    from stepprune.shards import shard_files

    first = next(pq.ParquetFile(shard_files(staging)[0]).iter_batches(1, columns=["sampling"]))
    record = json.loads(first.to_pylist()[0]["sampling"])
    return record.get("engine_dtype") or record.get("dtype", "auto")


def _generate_items(cfg: GenerateConfig, items: list, out) -> tuple:
    """Generate ``items`` batch by batch into ``out``, flushing as it goes; returns the backend
    and the seconds spent generating."""
    from tqdm.auto import tqdm

    from stepprune.models import resolve_model
    from stepprune.schema import GENERATIONS
    from stepprune.shards import ShardWriter

    backend, info = open_engine(cfg, resolve_model(cfg.model))
    tag = f"{cfg.shard_index:03d}of{cfg.num_shards:03d}"
    writer = ShardWriter(
        out,
        GENERATIONS,
        rows_per_shard=cfg.rows_per_shard,
        tag=tag,
        flush_seconds=cfg.flush_seconds,
    )
    bar = tqdm(total=len(items), unit="problem", desc="generate", dynamic_ncols=True)
    started, n_tok = time.monotonic(), 0
    with writer:
        for start in range(0, len(items), cfg.batch_size):
            batch = items[start : start + cfg.batch_size]
            for rows in generate_batch(cfg, backend, batch, info):
                writer.write(rows)
                writer.maybe_flush()
                n_tok += sum(r["n_tokens"] for r in rows)
                bar.update(len(rows))
                bar.set_postfix(tok_s=f"{n_tok / (time.monotonic() - started):.1f}")
    bar.close()
    return backend, time.monotonic() - started


def _check_resume(cfg: GenerateConfig) -> None:
    """Refuse to add rows to ``out`` made with other settings (its first row tells which)."""
    import json

    import pyarrow.parquet as pq

    from stepprune.models import model_label
    from stepprune.shards import shard_files

    files = shard_files(cfg.out) if Path(cfg.out).is_dir() else []
    staging = staging_dir(cfg)
    if not files and staging is not None and staging.is_dir():
        files = shard_files(staging)  # a run killed before its rows were rescored
    if not files:
        return
    cols = ["model", "backend", "step_pattern", "sampling"]
    first = next(pq.ParquetFile(files[0]).iter_batches(batch_size=1, columns=cols)).to_pylist()[0]
    old = {**json.loads(first.pop("sampling")), **first}
    new = {k: getattr(cfg, k) for k in RESUME_KEYS}
    new.update(model=model_label(cfg.model), backend=cfg.backend, step_pattern=cfg.step_pattern)
    diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    if cfg.backend == "hf" and not cfg.greedy and "hf_generation" not in old:
        # hf rows sampled before hf_generation was recorded were cut to transformers' default
        # top_k (50, or the checkpoint's): a resumed run would mix two distributions.
        diff.append("hf sampling: top-k-truncated rows -> the untruncated distribution")
    if diff:
        raise ValueError(
            f"{cfg.out}: holds generations made with other settings ({'; '.join(diff)}); "
            "resume with the same settings or use another --out"
        )


def saved_rows(out) -> int:
    """Rows on disk in ``out``: its shards and rows staged for rescoring (the CLI reports them
    after a stop)."""
    from stepprune.shards import count_rows

    root = Path(out)
    return count_rows(root) + sum(count_rows(d) for d in root.glob(".rescore-pending-*"))
