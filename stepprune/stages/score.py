"""The score stage: exact teacher-forced entropy for existing chains of thought.

Input is either generations shards (a vLLM top-k run, say) or any JSONL/Parquet file of CoTs
with a problem, a gold answer and a completion field. Output is generations shards whose
``entropy_source`` is ``rescored``: token entropies and log-probs are exact, step entropies are
recomputed over the same step spans, and top-k bounds (if any) are kept for comparison.
Resumable like generate: keys already in ``out`` are skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from stepprune.cot.steps import DEFAULT_STEP_PATTERN
from stepprune.data.prompts import DEFAULT_PROMPT
from stepprune.generation.rescoring import check_dtype, first_row, rescore_rows
from stepprune.scaleout.options import ExecutorOptions

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig(ExecutorOptions):
    input: str = ""
    out: str = "runs/score"
    model: str | None = None  # must be the generating model for generations shards
    dtype: str = "auto"  # auto: the generation's dtype recorded in the rows, else float32 on CPU
    chunk: int = 256  # head positions per log-softmax (memory: chunk x vocab floats)
    token_budget: int | None = None  # padded tokens per pass; None: 16384 on GPU, 1 on CPU
    group_rows: int = 256  # rows read, planned into batches and written together
    problem_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    completion_field: str = "completion"
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    step_pattern: str = DEFAULT_STEP_PATTERN
    rows_per_shard: int = 1000
    flush_seconds: float = 60.0
    grade_timeout: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("chunk", "rows_per_shard", "token_budget", "group_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _is_generations(source: str) -> bool:
    from stepprune.schema import GENERATIONS, identify, read_file_schema
    from stepprune.shards import shard_files

    path = Path(source)
    if path.suffix not in ("", ".parquet") or not path.exists():
        return False

    files = shard_files(path)
    return bool(files) and identify(read_file_schema(files[0]))[0] == GENERATIONS.name


def run(cfg: ScoreConfig) -> dict:
    from stepprune.backends.rescore import Rescorer
    from stepprune.cot.summary import summarize_generations
    from stepprune.models import model_label, resolve_model
    from stepprune.runlock import RunLock
    from stepprune.scaleout.cluster import connect_first
    from stepprune.shards import check_apart, removed_if_left_empty

    if not cfg.input:
        raise ValueError("score needs --input: generations shards or a CoT file")
    check_apart(cfg.out, [cfg.input])  # its rows would count as scored already
    generations = _is_generations(cfg.input)
    if cfg.executor == "ray" and not generations:
        raise ValueError(f"{cfg.input}: --executor ray rescores generations shards, not CoT files")
    # Every input row and the output are checked before a model loads or --out is made.
    cots = _check_generations(cfg.input) if generations else _file_inputs(cfg)
    dtype = _generation_dtype(cfg.input) if generations and cfg.dtype == "auto" else cfg.dtype
    _check_out(cfg.out, model_label(cfg.model), dtype)
    connect_first(cfg)
    if cfg.executor == "ray":
        return _score_on_ray(cfg, dtype)
    model = resolve_model(cfg.model)
    with removed_if_left_empty(cfg.out), RunLock(cfg.out, "score"):
        rescorer = Rescorer(model, dtype=dtype, token_budget=cfg.token_budget, chunk=cfg.chunk)
        rows = _generation_rows(cfg) if generations else _file_rows(cfg, cots, rescorer)
        seconds = rescore_rows(rows, rescorer, model_label(cfg.model), cfg)
    return {**summarize_generations(cfg.out), "rescoring_seconds": round(seconds, 1)}


def _score_on_ray(cfg: ScoreConfig, dtype: str) -> dict:
    from stepprune.cot.summary import summarize_generations
    from stepprune.runlock import RunLock
    from stepprune.scaleout.workers import score_on_ray
    from stepprune.shards import removed_if_left_empty

    with removed_if_left_empty(cfg.out), RunLock(cfg.out, "score"):
        seconds = score_on_ray(cfg, dtype)
    return {**summarize_generations(cfg.out), "rescoring_seconds": round(seconds, 1)}


def _check_generations(source: str) -> None:
    """Every shard of ``source`` is a generations shard (its schema, from the footer)."""
    from stepprune.schema import GENERATIONS, check_file
    from stepprune.shards import shard_files

    for path in shard_files(source):
        check_file(path, GENERATIONS)


def _check_out(out, label: str, dtype: str) -> None:
    """Refuse to add rows to an ``out`` holding rows scored by another model (whose keys would
    count as done: nothing would be scored) or, when ``dtype`` is known, in another dtype."""
    first = first_row(out)
    if first is None:
        return
    scorer = first.get("rescored_by") or first["model"]
    if scorer != label:
        raise ValueError(f"{out}: holds rows scored by {scorer}, not by {label}; use another --out")
    if dtype != "auto":
        check_dtype(out, dtype)


def _generation_dtype(source: str) -> str:
    """The dtype the rows were generated in (their sampling record), else "auto"."""
    import pyarrow.parquet as pq

    from stepprune.shards import shard_files

    first = next(pq.ParquetFile(shard_files(source)[0]).iter_batches(1, columns=["sampling"]))
    dtype = json.loads(first.to_pylist()[0]["sampling"]).get("dtype", "auto")
    log.info("rescoring in the generation's dtype: %s", dtype)
    return dtype


def _generation_rows(cfg: ScoreConfig):
    from stepprune.schema import GENERATIONS
    from stepprune.shards import iter_batches

    for _, batch in iter_batches(cfg.input, GENERATIONS, batch_size=64):
        yield from batch.to_pylist()


def _file_inputs(cfg: ScoreConfig) -> list[tuple]:
    """(problem, completion) of every row of a plain CoT file; errors name file, line, field."""
    from stepprune.data.load import load_problems

    problems = load_problems(
        cfg.input,
        problem_field=cfg.problem_field,
        answer_field=cfg.answer_field,
        id_field=cfg.id_field,
    )
    completions = read_field(Path(cfg.input), cfg.completion_field)
    if len(completions) != len(problems):
        raise ValueError(f"{cfg.input}: {len(completions)} completions for {len(problems)} rows")
    return list(zip(problems, completions, strict=True))


def _file_rows(cfg: ScoreConfig, cots: list[tuple], rescorer):
    """Generations rows for a plain CoT file's (problem, completion) pairs (entropies filled in
    by the caller)."""
    from transformers import AutoTokenizer

    from stepprune.backends import Completion
    from stepprune.cot.trajectory import RunInfo, build_row, package_versions
    from stepprune.data.prompts import render_prompt

    tok = AutoTokenizer.from_pretrained(rescorer.model.name_or_path)
    info = RunInfo(
        model=cfg.input,
        backend="external",
        sampling={"source_file": cfg.input},
        versions=package_versions(),
        step_pattern=cfg.step_pattern,
        grade_timeout=cfg.grade_timeout,
    )
    for problem, text in cots:
        prompt, prompt_ids = render_prompt(tok, cfg, problem.problem)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        zeros = [0.0] * len(ids)
        comp = Completion(ids, zeros, zeros, finish_reason="stop", entropy_source="rescored")
        yield build_row(problem, 0, prompt, prompt_ids, comp, tok, set(), info, seed=0)


def read_field(path: Path, field: str) -> list[str]:
    """One text field of every row of a JSONL, JSON-array or Parquet file; errors name file,
    line and field."""
    from stepprune.data.load import file_entries

    lines, values = [], []
    for line, row in file_entries(path):
        if isinstance(row, Exception):
            raise row
        lines.append(line)
        values.append(row.get(field))
    for line, value in zip(lines, values, strict=True):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}:{line}: field '{field}': missing or empty completion")
    return values


def saved_rows(out) -> int:
    """Rows on disk in ``out`` (the CLI reports them after a stop)."""
    from stepprune.shards import count_rows

    return count_rows(Path(out))
