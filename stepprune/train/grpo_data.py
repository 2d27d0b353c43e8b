"""GRPO training problems: problem sets or pruned shards -> a dataset of chat prompts and golds.

A source is a built-in set name, a problem file or ``hub:`` id (``stepprune.data.load``), or pruned
shards (a directory, or a Parquet file whose schema metadata says ``pruned``). Pruned shards can
hold several samples of one problem; each problem is kept once, in first-seen order. ``limit``
keeps the first N problems, then ``sample`` draws N of them at random with ``seed`` (the
authors sampled 10k problems); a ``sample`` above the problems there are keeps them all, with a
warning naming both numbers.

Prompts are conversational (``[{"role": "user", "content": template.format(problem=...)}]``,
plus an optional system message) and TRL applies the model's chat template. Rendering them
ourselves would make TRL tokenize text that already holds the template's BOS with
``add_special_tokens=True``, doubling it on tokenizers that add one (R1-Distill).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from stepprune.data.load import Problem

log = logging.getLogger(__name__)


def is_pruned_source(source: str) -> bool:
    """Whether ``source`` names pruned shards (a directory, or a ``pruned`` Parquet file)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return True
    if path.is_file() and path.suffix.lower() == ".parquet":
        from stepprune.schema import identify, read_file_schema

        return identify(read_file_schema(path))[0] == "pruned"
    return False


def pruned_problems(source: str) -> list[Problem]:
    """One Problem per distinct problem_id of pruned shards, in first-seen order."""
    from stepprune.schema import PRUNED
    from stepprune.shards import read_table, shard_files

    if not shard_files(source):
        raise FileNotFoundError(f"{source!r}: a directory without pruned .parquet shards")
    columns = ["problem_id", "source", "problem", "gold_answer"]
    table = read_table(source, PRUNED, columns=columns)
    seen: dict[str, Problem] = {}
    for row in table.to_pylist():
        if row["problem_id"] not in seen:
            seen[row["problem_id"]] = Problem(
                row["problem_id"], row["source"], row["problem"], row["gold_answer"]
            )
    return list(seen.values())


def training_problems(
    source: str,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    id_field: str | None = None,
) -> list[Problem]:
    """The problems GRPO trains on (see the module docstring); ``id_field`` names a file's
    question id column (a repeated id is refused), else ids are ``<stem>-<row>``."""
    from stepprune.data.load import load_problems

    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if is_pruned_source(source):
        problems = pruned_problems(source)
        problems = problems if limit is None else problems[:limit]
    else:
        problems = load_problems(source, data_dir=data_dir, limit=limit, id_field=id_field)
    if sample is not None and sample < len(problems):
        problems = random.Random(seed).sample(problems, sample)
    elif sample is not None and sample > len(problems):
        log.warning(
            "sample %d asks for more problems than %s holds (%d): training on all %d",
            sample,
            source,
            len(problems),
            len(problems),
        )
    if not problems:
        raise ValueError(f"no training problems in {source!r}")
    log.info("%d training problems from %s", len(problems), source)
    return problems


def build_dataset(problems: list[Problem], template: str, system_prompt: str | None = None):
    """A ``datasets.Dataset`` with ``prompt`` (messages), ``gold_answer`` and ``problem_id``."""
    from datasets import Dataset

    from stepprune.data.prompts import chat_prompt

    return Dataset.from_list(
        [
            {
                "prompt": chat_prompt(p.problem, template, system_prompt),
                "gold_answer": p.answer,
                "problem_id": p.id,
            }
            for p in problems
        ]
    )
