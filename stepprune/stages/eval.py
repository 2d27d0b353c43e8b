"""The eval stage: does a pruned chain of thought still lead to the right answer?

For every trajectory of a generate run, every strategy and every kappa, the thinking is pruned
by the same code as ``stepprune prune`` (``prune.prune_frame``), the thought is closed
(``</think>`` for reasoning models, a fixed answer lead-in for instruct models), the model
writes the final answer greedily within a short budget, and the shared grader grades it.
Identical answer prompts (kappa=0 under every strategy, kappa=1 under the step strategies,
short CoTs where two strategies pick the same steps) are answered once.

Results are keyed by (trajectory, strategy, kappa) and flushed regularly, so a killed run
resumes where it stopped. The report (tables and plots, ``stepprune.evaluation.report``) is
rebuilt from all results on disk at the end of every run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stepprune.scaleout.options import ExecutorOptions

log = logging.getLogger(__name__)

# Fields that change what an answer is: a resumed run must have the same ones.
ANSWER_SETTINGS = (
    "model",
    "backend",
    "dtype",
    "score",
    "budget",
    "protect_ends",
    "merge_skips",
    "seed",
    "answer_lead_in",
    "answer_tokens",
    "sampling_kwargs",
)


@dataclass
class EvalConfig(ExecutorOptions):
    input: str = ""  # generations shards
    out: str = "runs/eval"
    model: str | None = None  # the model that answers; None: the embedded SmolLM2
    backend: str = "hf"  # hf | vllm
    dtype: str = "auto"
    kappas: list = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    strategies: list = field(
        default_factory=lambda: [
            *("low", "high", "random", "token", "random-matched", "high-matched", "answer-first")
        ]
    )
    random_seeds: int = 3  # random and random-matched run at seeds seed, seed+1, ...
    score: str = "sum"  # sum | mean | sampled | surprisal (pruning.scores)
    budget: str = "steps"
    protect_ends: bool = False
    merge_skips: bool = False
    seed: int = 0
    min_steps: int = 1  # trajectories with fewer thinking steps have nothing to prune
    correct_only: bool = False  # only trajectories whose unpruned answer was right
    limit: int | None = None  # trajectories
    max_prompt_tokens: int | None = None  # skip longer answer prompts (e.g. the engine's limit)
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
    overwrite: bool = False  # replace results made with other answer settings

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bootstrap", "answer_tokens", "batch_size", "rows_per_shard", "random_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("limit", "max_prompt_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        for name in ("kappas", "strategies"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice: {values}")

    def specs(self) -> list:
        from stepprune.pruning.select import PruneSpec

        args = (self.score, self.budget, self.protect_ends, self.merge_skips)
        return [
            PruneSpec(float(k), s, *args, seed)
            for s in self.strategies
            for seed in self.seeds(s)
            for k in self.kappas
        ]

    def seeds(self, strategy: str) -> list[int]:
        """The selection seeds a strategy runs at: several for the random ones."""
        n = self.random_seeds if strategy.startswith("random") else 1
        return [self.seed + i for i in range(n)]


def run(cfg: EvalConfig) -> dict:
    from stepprune.evaluation.answer_prompts import build_variants, generation_models
    from stepprune.evaluation.report import write_report
    from stepprune.models import model_label
    from stepprune.runlock import RunLock
    from stepprune.scaleout.cluster import connect_first
    from stepprune.schema import EVAL_RESULTS, GENERATIONS, check_file
    from stepprune.shards import check_apart, existing_keys, shard_files

    specs = cfg.specs()  # validates kappas and strategies before any work
    files = shard_files(cfg.input) if cfg.input else []
    if not files:
        raise FileNotFoundError(f"no generations shards in {cfg.input!r}")
    check_apart(cfg.out, [cfg.input, *([cfg.baseline] if cfg.baseline else [])])
    for f in files:
        check_file(f, GENERATIONS)
    results_dir = Path(cfg.out) / "results"
    if not specs:
        return write_report(cfg, files)
    tokenizer = _tokenizer(cfg)  # a bad --model fails before anything is written
    connect_first(cfg)  # an unreachable Ray cluster too
    label, generators = model_label(cfg.model), generation_models(files)
    if generators != [label]:  # allowed: a model fine-tuned from the generator, say
        log.warning("answering with %s from CoTs generated by %s", label, ", ".join(generators))
    with RunLock(cfg.out, "eval"):  # a second eval into out would answer the same keys again
        _check_settings(cfg, results_dir, {"answering_model": label, "generated_by": generators})
        done = existing_keys(results_dir, EVAL_RESULTS)
        variants = build_variants(files, cfg, specs, tokenizer, done, label)
        if variants.height:
            answer_variants(variants, cfg, tokenizer, results_dir)
        return write_report(cfg, files)


def _settings(cfg: EvalConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k in ANSWER_SETTINGS}


def _check_settings(cfg: EvalConfig, results_dir: Path, models: dict) -> None:
    """Resume only results made the same way; clear temp files a killed run left behind. The
    settings file also names the answering model and the models that wrote the CoTs."""
    import json
    import shutil

    path = results_dir.parent / "eval_settings.json"
    if results_dir.is_dir() and any(results_dir.glob("*.parquet")):
        old = json.loads(path.read_text()) if path.exists() else {}
        diff = sorted(k for k in ANSWER_SETTINGS if old.get(k) != _settings(cfg).get(k))
        if diff and not cfg.overwrite:
            raise ValueError(
                f"{results_dir}: results were made with other settings ({', '.join(diff)}); "
                "use another --out, or --set overwrite=true to replace them"
            )
        if diff:
            shutil.rmtree(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    for tmp in results_dir.glob(".tmp-*"):
        tmp.unlink()
    record = {**_settings(cfg), **models}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _tokenizer(cfg: EvalConfig):
    from transformers import AutoTokenizer

    from stepprune.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(cfg.model))


def answer_variants(variants, cfg: EvalConfig, tokenizer, results_dir) -> None:
    """Answer each distinct prompt once, in trajectory order, writing results as batches end."""
    import polars as pl
    from tqdm.auto import tqdm

    from stepprune.evaluation.answer_prompts import distinct_prompts
    from stepprune.evaluation.answering import answer_batch, answer_engine, answered_rows
    from stepprune.models import model_label

    variants, prompts = distinct_prompts(variants, tokenizer, cfg.max_prompt_tokens)
    log.info("%d distinct answer prompts for %d results", prompts.height, variants.height)
    if cfg.executor == "ray":
        from stepprune.scaleout.workers import eval_on_ray

        eval_on_ray(cfg, variants, prompts, results_dir)
        return
    label = model_label(cfg.model)
    backend, spec = answer_engine(cfg)
    bar = tqdm(total=variants.height, unit="result", desc="eval", dynamic_ncols=True)
    with _writer(cfg, results_dir) as writer:
        for start in range(0, prompts.height, cfg.batch_size):
            batch = prompts.slice(start, cfg.batch_size)
            answers = answer_batch(batch, backend, spec, cfg)
            mine = variants.filter(pl.col("_pid").is_between(start, start + batch.height - 1))
            rows = answered_rows(mine, answers, cfg, label)
            writer.write(rows)
            writer.maybe_flush()
            bar.update(len(rows))
    bar.close()


def _writer(cfg: EvalConfig, results_dir):
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import ShardWriter

    # A fresh tag per run: a resumed run adds shards and never rewrites a finished one.
    return ShardWriter(
        results_dir,
        EVAL_RESULTS,
        rows_per_shard=cfg.rows_per_shard,
        tag=f"{time.time_ns():x}",
        flush_seconds=cfg.flush_seconds,
    )


def saved_rows(out) -> int:
    """Results on disk in ``out`` (the CLI reports them after a stop)."""
    from stepprune.shards import count_rows

    return count_rows(Path(out) / "results")
