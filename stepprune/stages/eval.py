"""The eval stage: does a pruned chain of thought still lead to the right answer?

For every trajectory of a generate run, every strategy and every kappa, the thinking is pruned
by the same code as ``stepprune prune`` (``stages.prune.prune_frame``), the thought is closed
(``</think>`` for reasoning models, a fixed answer lead-in for instruct models), the model
writes the final answer greedily within a short budget, and the shared grader grades it.
Identical answer prompts (kappa=0 under every strategy, kappa=1 under the step strategies,
short CoTs where two strategies pick the same steps) are answered once.

Results are keyed by (trajectory, strategy, kappa) and flushed regularly, so a killed run
resumes where it stopped. The report (tables and plots, ``stepprune.report``) is rebuilt from
all results on disk at the end of every run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from stepprune.stages.prune import ROW_COLUMNS

log = logging.getLogger(__name__)

INSTRUCT_LEAD_IN = "\n\nTherefore, the final answer is $\\boxed{"
THINK_LEAD_IN = "\n</think>\n\n"
KEYS = ["problem_id", "sample_index"]
# What prune reads, plus what answering and the token control need.
READ_COLUMNS = [
    *ROW_COLUMNS,
    "prompt_token_ids",
    "think_format",
    "n_steps",
    "token_ids",
    "token_entropies",
]


@dataclass
class EvalConfig:
    input: str = ""  # generations shards
    out: str = "runs/eval"
    model: str | None = None  # the model that answers; None: the embedded SmolLM2
    backend: str = "hf"  # hf | vllm
    dtype: str = "auto"
    kappas: list = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    strategies: list = field(default_factory=lambda: ["low", "high", "random", "token"])
    score: str = "sum"
    budget: str = "steps"
    protect_ends: bool = False
    merge_skips: bool = False
    seed: int = 0
    min_steps: int = 1  # trajectories with fewer thinking steps have nothing to prune
    limit: int | None = None  # trajectories
    answer_lead_in: str | None = None  # None: THINK_LEAD_IN or INSTRUCT_LEAD_IN by CoT format
    answer_tokens: int = 32
    batch_size: int = 32
    bootstrap: int = 1000
    ci_level: float = 0.95
    baseline: str | None = None  # generations whose mean length is L_base of the plain table
    rows_per_shard: int = 5000
    flush_seconds: float = 60.0
    grade_timeout: float = 5.0
    sampling_kwargs: dict = field(default_factory=dict)
    engine_kwargs: dict = field(default_factory=dict)

    def specs(self) -> list:
        from stepprune.prune import PruneSpec

        return [
            PruneSpec(
                float(k), s, self.score, self.budget, self.protect_ends, self.merge_skips, seed
            )
            for seed in [self.seed]
            for s in self.strategies
            for k in self.kappas
        ]


def run(cfg: EvalConfig) -> dict:
    from pathlib import Path

    import pyarrow.parquet as pq

    from stepprune.report import write_report
    from stepprune.schema import EVAL_RESULTS, GENERATIONS, check_file_schema
    from stepprune.shards import existing_keys, shard_files

    specs = cfg.specs()  # validates kappas and strategies before any work
    files = shard_files(cfg.input) if cfg.input else []
    if not files:
        raise FileNotFoundError(f"no generations shards in {cfg.input!r}")
    for f in files:
        check_file_schema(pq.read_schema(f), GENERATIONS, f)
    results_dir = Path(cfg.out) / "results"
    if specs:
        done = existing_keys(results_dir, EVAL_RESULTS)
        tokenizer = _tokenizer(cfg)
        variants = build_variants(files, cfg, specs, tokenizer, done)
        if variants.height:
            answer_variants(variants, cfg, tokenizer, results_dir)
    return write_report(cfg, files)


def _tokenizer(cfg: EvalConfig):
    from transformers import AutoTokenizer

    from stepprune.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(cfg.model))


def build_variants(files, cfg: EvalConfig, specs, tokenizer, done: set):
    """One row per (trajectory, strategy, kappa) not in ``done``, with its answer prompt text."""
    import polars as pl
    import pyarrow.parquet as pq

    from stepprune.stages.prune import prune_frame

    frames, remaining = [], cfg.limit
    for path in files:
        if remaining is not None and remaining <= 0:
            break
        df = pl.from_arrow(pq.read_table(path, columns=READ_COLUMNS)).with_row_index("_row")
        df = df.filter(pl.col("n_steps") >= cfg.min_steps)
        if remaining is not None:
            df = df.head(remaining)
            remaining -= df.height
        df = df.with_row_index("_r").with_columns(
            _t=pl.lit(path.name) + pl.col("_r").cast(pl.String)
        )
        for spec in specs:
            pruned = prune_frame(df, spec, tokenizer, path)
            frames.append(_variant_rows(pruned, spec, cfg))
    if not frames:
        return pl.DataFrame()
    variants = pl.concat(frames)
    if done:
        keys = pl.DataFrame(
            list(done), schema=[*KEYS, "strategy", "kappa"], orient="row"
        ).with_columns(pl.col("sample_index").cast(pl.Int32))
        variants = variants.join(keys, on=[*KEYS, "strategy", "kappa"], how="anti")
    log.info("%d (trajectory, strategy, kappa) results to compute", variants.height)
    return variants


def _variant_rows(pruned, spec, cfg: EvalConfig):
    import polars as pl

    think = pl.col("think_format") == "think_tags"
    opened = pl.col("prompt").str.strip_chars_end().str.ends_with("<think>")
    lead = (
        pl.lit(cfg.answer_lead_in)
        if cfg.answer_lead_in is not None
        else pl.when(think).then(pl.lit(THINK_LEAD_IN)).otherwise(pl.lit(INSTRUCT_LEAD_IN))
    )
    body = pl.when(think).then(
        pl.when(opened).then(pl.lit("")).otherwise(pl.lit("<think>\n"))
        + pl.col("compressed_thinking").str.strip_chars()
    )
    body = body.otherwise(pl.col("compressed_thinking").str.strip_chars_end())
    return pruned.select(
        "_t",
        *KEYS,
        "source",
        "gold_answer",
        "model",
        "entropy_source",
        "prompt_token_ids",
        strategy=pl.lit(spec.strategy),
        kappa=pl.lit(spec.kappa, pl.Float64),
        score=pl.lit(spec.score),
        budget=pl.lit(spec.budget),
        seed=pl.lit(spec.seed, pl.Int64),
        n_steps="n_steps",
        n_skipped=pl.col("n_skipped").cast(pl.Int32),
        original_thinking_tokens=pl.col("n_thinking_tokens").cast(pl.Int32),
        kept_thinking_tokens=pl.col("kept_thinking_tokens").cast(pl.Int32),
        original_tokens=pl.col("n_tokens").cast(pl.Int32),
        original_correct="correct",
        answer_lead_in=lead,
        _continuation=body + lead,
    )


def answer_variants(variants, cfg: EvalConfig, tokenizer, results_dir) -> None:
    """Answer each distinct prompt once, in trajectory order, writing results as batches end."""
    import polars as pl
    from tqdm.auto import tqdm

    from stepprune.backends import SamplingSpec, load_backend
    from stepprune.models import model_label, resolve_model
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import ShardWriter

    prompt_key = [*KEYS, "_continuation"]
    # Trajectory-major order: a batch holds one trajectory's variants, which share the prompt
    # prefix (vLLM's prefix cache hits) and have similar lengths (little padding for hf).
    unique = (
        variants.unique(subset=prompt_key, maintain_order=True)
        .sort("_t", maintain_order=True)
        .select(*prompt_key, "prompt_token_ids", "answer_lead_in", "gold_answer")
    )
    label = model_label(cfg.model)
    others = sorted(set(variants["model"].unique()) - {label})
    if others:
        log.warning("answering CoTs generated by %s with a different model: %s", others, label)
    log.info("%d distinct answer prompts for %d results", unique.height, variants.height)
    backend = load_backend(
        cfg.backend, resolve_model(cfg.model), dtype=cfg.dtype, **cfg.engine_kwargs
    )
    spec = SamplingSpec(
        greedy=True, max_new_tokens=cfg.answer_tokens, seed=cfg.seed, extra=cfg.sampling_kwargs
    )
    # A fresh tag per run: a resumed run adds shards and never rewrites a finished one.
    tag = f"{time.time_ns():x}"
    writer = ShardWriter(
        results_dir,
        EVAL_RESULTS,
        rows_per_shard=cfg.rows_per_shard,
        tag=tag,
        flush_seconds=cfg.flush_seconds,
    )
    bar = tqdm(total=variants.height, unit="result", desc="eval", dynamic_ncols=True)
    with writer:
        for start in range(0, unique.height, cfg.batch_size):
            batch = unique.slice(start, cfg.batch_size)
            answers = _answer_batch(batch, backend, tokenizer, spec, cfg)
            rows = variants.join(answers, on=prompt_key, how="inner").drop(
                "_t", "_continuation", "prompt_token_ids"
            )
            rows = rows.with_columns(backend=pl.lit(cfg.backend), model=pl.lit(label))
            writer.write(rows.to_dicts())
            writer.maybe_flush()
            bar.update(rows.height)
    bar.close()


def _answer_batch(batch, backend, tokenizer, spec, cfg: EvalConfig):
    import polars as pl

    from stepprune import grading
    from stepprune.trajectory import completion_text

    conts = tokenizer(batch["_continuation"].to_list(), add_special_tokens=False)["input_ids"]
    prompts = [list(p) + c for p, c in zip(batch["prompt_token_ids"], conts, strict=True)]
    comps = backend.generate(prompts, spec)
    texts, extracted, correct = [], [], []
    for comp, lead, gold in zip(comps, batch["answer_lead_in"], batch["gold_answer"], strict=True):
        text, _ = completion_text(backend.tokenizer, comp.token_ids, backend.stop_ids)
        grade = grading.grade(lead + text, gold, timeout=cfg.grade_timeout)
        texts.append(text)
        extracted.append(grade.extracted)
        correct.append(grade.correct)
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return batch.select(*KEYS, "_continuation").with_columns(
        answer_prompt_tokens=pl.Series([len(p) for p in prompts], dtype=pl.Int32),
        answer_text=pl.Series(texts, dtype=pl.String),
        answer_finish_reason=pl.Series([c.finish_reason for c in comps], dtype=pl.String),
        extracted_answer=pl.Series(extracted, dtype=pl.String),
        correct=pl.Series(correct, dtype=pl.Boolean),
        created_at=pl.lit(created),
    )
