"""The engines a Ray actor holds: a generate backend, an exact rescorer or eval's answering
engine, and the stage entry points that hand them to the pool (``stepprune.scaleout.pool``)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class GenerateWorker:
    """Generates (problem, sample) items with the generate stage's backend and row builder."""

    def __init__(self, cfg, work: list, model_path: str):
        self.cfg, self.work, self.model_path = cfg, work, model_path
        self.backend = self.info = None
        # vLLM inside a placement group runs its workers on the group's bundles by itself.
        kw = cfg.engine_kwargs if cfg.backend == "vllm" else {}
        tp, pp = kw.get("tensor_parallel_size", 1), kw.get("pipeline_parallel_size", 1)
        self.gpus_per_engine = int(tp) * int(pp)

    def dataset(self, ray):
        """One unit per local batch (same items, same batch seed, same padding as a local run),
        built on the driver: no read task competes with the engines for CPUs."""
        size = self.cfg.batch_size
        units = [
            {"start": s, "stop": min(s + size, len(self.work))}
            for s in range(0, len(self.work), size)
        ]
        return ray.data.from_items(units, override_num_blocks=len(units))

    def setup(self) -> None:
        from stepprune.generation.engine import open_engine

        self.backend, self.info = open_engine(self.cfg, self.model_path)

    def items(self, batch) -> list:
        bounds = zip(batch["start"].tolist(), batch["stop"].tolist(), strict=True)
        return [item for start, stop in bounds for item in self.work[start:stop]]

    def key(self, item) -> tuple:
        problem, sample = item
        return problem.id, sample

    def __call__(self, items: list):
        from stepprune.generation.engine import generate_batch

        if items:
            yield from generate_batch(self.cfg, self.backend, items, self.info)


class ScoreWorker:
    """Rescores generations rows with exact teacher-forced entropy (the score stage's rows).
    Its unit of work is one input shard, read by the actor from the shared filesystem: rows of
    32k tokens do not travel through the object store, and no read task waits for a CPU that
    the engines hold."""

    def __init__(self, cfg, files: list[str], dtype: str, model_path: str, label: str):
        self.cfg, self.files, self.dtype = cfg, files, dtype
        self.model_path, self.label = model_path, label
        self.rescorer = None

    def dataset(self, ray):
        units = [{"file": f} for f in self.files]
        return ray.data.from_items(units, override_num_blocks=len(units))

    def setup(self) -> None:
        from stepprune.backends.rescore import Rescorer
        from stepprune.generation.rescoring import check_dtype

        cfg = self.cfg
        self.rescorer = Rescorer(
            self.model_path, dtype=self.dtype, token_budget=cfg.token_budget, chunk=cfg.chunk
        )
        check_dtype(cfg.out, self.rescorer.dtype_name)

    def items(self, batch) -> list[dict]:
        from stepprune.schema import GENERATIONS
        from stepprune.shards import read_table

        return [r for f in batch["file"].tolist() for r in read_table(f, GENERATIONS).to_pylist()]

    def key(self, row: dict) -> tuple:
        return row["problem_id"], row["sample_index"]

    def __call__(self, rows: list[dict]):
        from stepprune.generation.rescoring import rescore_group, row_groups

        for group in row_groups(rows, set(), size=self.cfg.group_rows):
            yield rescore_group(group, self.rescorer, self.label)


class EvalWorker:
    """Answers eval's distinct answer prompts: a unit is a run of ``batch_size`` prompts, its
    items the result rows (variants) those prompts answer, keyed as the results are; a prompt
    whose results are all written already is not sent again."""

    def __init__(self, cfg, variants, prompts, model_path: str, label: str):
        self.cfg, self.variants, self.prompts = cfg, variants, prompts
        self.model_path, self.label = model_path, label
        self.backend = self.spec = None
        self.last_tokens = 0

    def dataset(self, ray):
        size, n = self.cfg.batch_size, self.prompts.height
        units = [{"start": s, "stop": min(s + size, n)} for s in range(0, n, size)]
        return ray.data.from_items(units, override_num_blocks=max(len(units), 1))

    def setup(self) -> None:
        import dataclasses

        from stepprune.evaluation.answering import answer_engine

        self.backend, self.spec = answer_engine(
            dataclasses.replace(self.cfg, model=self.model_path)
        )

    def items(self, batch) -> list[dict]:
        import polars as pl

        bounds = zip(batch["start"].tolist(), batch["stop"].tolist(), strict=True)
        return [
            row
            for start, stop in bounds
            for row in self.variants.filter(pl.col("_pid").is_between(start, stop - 1)).to_dicts()
        ]

    def key(self, row: dict) -> tuple:
        from stepprune.schema import EVAL_RESULTS

        return tuple(row[c] for c in EVAL_RESULTS.key)

    def tokens(self, rows: list[dict]) -> int:
        """Prompt tokens of the last answered batch: each distinct prompt once, however many
        result rows share it (the pool asks right after each yielded list)."""
        return self.last_tokens

    def __call__(self, rows: list[dict]):
        import polars as pl

        from stepprune.evaluation.answering import answer_batch, answered_rows

        if not rows:
            return
        todo = pl.DataFrame(rows, schema=self.variants.schema)
        batch = self.prompts.filter(pl.col("_pid").is_in(todo["_pid"].unique().to_list()))
        answers = answer_batch(batch, self.backend, self.spec, self.cfg)
        self.last_tokens = int(answers["answer_prompt_tokens"].sum())
        yield answered_rows(todo, answers, self.cfg, self.label)


def _absolute(path: str) -> str:
    """Actors do not run in the driver's directory: local paths travel absolute."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _writer_kwargs(cfg) -> dict:
    return {"rows_per_shard": cfg.rows_per_shard, "flush_seconds": cfg.flush_seconds}


def generate_on_ray(cfg, items: list, worker=None) -> float:
    """Generate ``items`` on the Ray pool into ``cfg.out``; the seconds it took. ``worker``
    replaces the default one (tests wrap it to lose an actor)."""
    from stepprune.models import resolve_model
    from stepprune.scaleout.pool import run_pool
    from stepprune.schema import GENERATIONS

    # Resolved once here: a packaged model is converted once, not by every actor at once.
    worker = worker or GenerateWorker(cfg, items, _absolute(resolve_model(cfg.model)))
    return run_pool(
        worker,
        cfg.out,
        GENERATIONS,
        cfg,
        total=len(items),
        batch_size=1,  # one unit: one local batch
        writer_kwargs=_writer_kwargs(cfg),
        desc="generate",
    )


def score_on_ray(cfg, dtype: str, worker=None) -> float:
    """Rescore the generations shards ``cfg.input`` on the Ray pool into ``cfg.out``."""
    import dataclasses

    import pyarrow.parquet as pq

    from stepprune.models import model_label, resolve_model
    from stepprune.scaleout.pool import run_pool
    from stepprune.schema import GENERATIONS
    from stepprune.shards import existing_keys, shard_files

    cfg = dataclasses.replace(cfg, out=str(Path(cfg.out).resolve()))  # the actors check it
    files = [str(Path(f).resolve()) for f in shard_files(cfg.input)]
    done = existing_keys(cfg.out, GENERATIONS)
    total = sum(pq.read_metadata(f).num_rows for f in files) - len(done)
    if total <= 0:  # nothing left: no engine is loaded
        return 0.0
    label = model_label(cfg.model)
    worker = worker or ScoreWorker(cfg, files, dtype, _absolute(resolve_model(cfg.model)), label)
    return run_pool(
        worker,
        cfg.out,
        GENERATIONS,
        cfg,
        total=max(total, 0),
        batch_size=1,
        writer_kwargs=_writer_kwargs(cfg),
        desc="rescore",
    )


def eval_on_ray(cfg, variants, prompts, results_dir, worker=None) -> float:
    """Answer eval's ``prompts`` on the Ray pool, writing every row of ``variants`` into
    ``results_dir``: the rows a local run writes, resumable by result key."""
    from stepprune.models import model_label, resolve_model
    from stepprune.scaleout.pool import run_pool
    from stepprune.schema import EVAL_RESULTS

    if not variants.height:
        return 0.0
    label = model_label(cfg.model)
    path = _absolute(resolve_model(cfg.model))
    worker = worker or EvalWorker(cfg, variants, prompts, path, label)
    return run_pool(
        worker,
        results_dir,
        EVAL_RESULTS,
        cfg,
        total=variants.height,
        batch_size=1,
        writer_kwargs=_writer_kwargs(cfg),
        desc="eval",
    )
