"""The generate stage: problems -> chains of thought with per-token entropy -> generations shards.

Resumable by construction: the (problem_id, sample_index) keys already present in the output
directory are skipped, shards appear atomically, and buffered rows are flushed at least every
``flush_seconds``, so a SIGKILL loses at most that much work and never duplicates a row.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepprune.cot.steps import DEFAULT_STEP_PATTERN
from stepprune.scaleout.options import ExecutorOptions

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "{problem}\n\nPlease reason step by step, separating the steps with blank lines, "
    "and put your final answer within \\boxed{{}}."
)


@dataclass
class SamplingOptions:
    """How completions are sampled: shared by generate and bench (which runs generate)."""

    backend: str = "hf"  # hf | vllm
    n_samples: int = 1
    greedy: bool = False
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0
    batch_size: int = 8
    dtype: str = "auto"
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    sampling_kwargs: dict = field(default_factory=dict)  # passed to GenerationConfig/SamplingParams
    engine_kwargs: dict = field(default_factory=dict)  # passed to from_pretrained / vllm.LLM

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("n_samples, batch_size and max_new_tokens must be >= 1")
        check_sampling(self.greedy, self.temperature, self.top_p)
        from stepprune.data.prompts import check_template

        check_template(self.prompt_template)


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
        if self.executor == "ray" and (self.num_shards > 1 or self.rescore):
            raise ValueError(
                "--executor ray balances the problems itself and does not rescore: drop "
                "--num-shards/--rescore and run `stepprune score --executor ray` after a top-k run"
            )
        try:
            re.compile(self.step_pattern)
        except re.error as e:
            msg = f"step_pattern {self.step_pattern!r}: not a regular expression ({e})"
            raise ValueError(msg) from e


def check_sampling(greedy: bool, temperature: float, top_p: float) -> None:
    """Sampling values an engine would refuse only after loading the model."""
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature} (or --greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def render_prompt(tokenizer, cfg: GenerateConfig, problem_text: str) -> tuple[str, list[int]]:
    from stepprune.data.prompts import chat_prompt

    messages = chat_prompt(problem_text, cfg.prompt_template, cfg.system_prompt)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def pending_items(cfg: GenerateConfig, problems, done: set[tuple]) -> list[tuple]:
    """(problem, sample_index) pairs of this shard that the output does not hold yet."""
    mine = [p for i, p in enumerate(problems) if i % cfg.num_shards == cfg.shard_index]
    return [(p, s) for p in mine for s in range(cfg.n_samples) if (p.id, s) not in done]


def sampling_spec(cfg: GenerateConfig, batch_seed: int):
    from stepprune.backends import SamplingSpec

    return SamplingSpec(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        greedy=cfg.greedy,
        seed=batch_seed,
        extra=dict(cfg.sampling_kwargs),
    )


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
    from stepprune.models import model_label, resolve_model
    from stepprune.schema import GENERATIONS
    from stepprune.shards import iter_batches
    from stepprune.stages.score import rescore_rows

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


def open_engine(cfg: GenerateConfig, model_path: str) -> tuple:
    """The backend for ``cfg`` and the run record every row carries."""
    from stepprune.backends import load_backend
    from stepprune.cot.trajectory import RunInfo, package_versions
    from stepprune.models import model_label

    backend = load_backend(cfg.backend, model_path, dtype=cfg.dtype, **cfg.engine_kwargs)
    info = RunInfo(
        model=model_label(cfg.model),
        backend=cfg.backend,
        sampling=_sampling_record(cfg, backend),
        step_pattern=cfg.step_pattern,
        versions=package_versions("vllm" if cfg.backend == "vllm" else "accelerate"),
        grade_timeout=cfg.grade_timeout,
    )
    return backend, info


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


# Settings that change what a row holds: a resumed run must match the rows already written.
# n_samples may grow (more samples per problem), and batch_size only groups the work.
RESUME_KEYS = ("greedy", "temperature", "top_p", "max_new_tokens", "seed", "dtype")
RESUME_KEYS += ("sampling_kwargs", "prompt_template", "system_prompt", "rescore")


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


def _sampling_record(cfg: GenerateConfig, backend) -> dict:
    record = {k: getattr(cfg, k) for k in (*RESUME_KEYS, "n_samples", "batch_size")}
    record.update(getattr(backend, "provenance", dict)())
    return record


def generate_batch(cfg, backend, batch, info):
    """Yield the batch's rows as they are ready: one at a time from a streaming backend (vLLM,
    whose batch can be a whole set), all at once from the others."""
    from stepprune.cot.trajectory import build_row

    prompts = [render_prompt(backend.tokenizer, cfg, p.problem) for p, _ in batch]
    # The batch seed depends only on the first item, so a resumed run samples its batches the
    # same way a fresh run with the same batch composition would.
    first_problem, first_sample = batch[0]
    seed = cfg.seed * 1_000_003 + abs(hash_id(first_problem.id)) % 1_000_003 + first_sample
    spec = sampling_spec(cfg, seed)

    def row(i, comp):
        (problem, sample), (text, ids) = batch[i], prompts[i]
        return build_row(
            problem, sample, text, ids, comp, backend.tokenizer, backend.stop_ids, info, seed
        )

    token_ids = [ids for _, ids in prompts]
    if hasattr(backend, "generate_stream"):
        for i, comp in backend.generate_stream(token_ids, spec):
            yield [row(i, comp)]
    else:
        yield [row(i, c) for i, c in enumerate(backend.generate(token_ids, spec))]


def hash_id(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
