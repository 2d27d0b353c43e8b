"""SFT training data: pruned shards -> filtered, mixed prompt/completion rows, with provenance.

Rows are read from ``pruned`` shards only (any other file is refused by name), filtered in this
order: ``correct_only``, ``kappa``, ``strategy``, then ``max_tokens``: rows whose training
sequence (prompt + completion + EOS, in tokens of the training tokenizer) exceeds it are
dropped. Of the N rows left, a seeded choice of exactly round(``unpruned_fraction`` x N) train
on their original, unpruned thinking instead of the compressed one (each trajectory appears
once, either way). That choice is made only among rows whose unpruned sequence fits
``max_tokens`` too, so the limit holds for the text actually trained on and the count stays
exact; if fewer rows fit than the fraction asks for, that is an error, not a smaller mix.

Rows are tokenized here, not by TRL: ``input_ids`` are the prompt's ids, then the completion's,
then one EOS (unless the completion ends with it), and ``completion_mask`` marks the completion,
so TRL trains on the completion only (``prompt`` and ``completion`` stay as text for reading).
The prompt is encoded as the model reads it at inference, from its own ids on: a problem that
quotes "[SKIP]" keeps it as text (``skip_token.plain_text_encoder``), while the [SKIP]s of the
completion are the token. Splitting at the prompt's end is also what generation does, where
TRL's joint tokenization of prompt + completion can merge tokens across it. The prompt gets the
tokenizer's default special tokens, so a tokenizer that prepends BOS by itself (DeepSeek-R1
distills) would see BOS twice; the rendered prompt's own leading BOS text is removed then.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stepprune.cot.steps import SKIP_TOKEN

log = logging.getLogger(__name__)

COLUMNS = [
    "problem_id",
    "correct",
    "kappa",
    "strategy",
    "model",
    "prompt",
    "completion",
    "original_thinking",
    "answer_text",
]
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class DataReport:
    """Counts for the summary and the model card."""

    files: list[str] = field(default_factory=list)
    rows_in: int = 0
    dropped_incorrect: int = 0
    dropped_kappa: int = 0
    dropped_strategy: int = 0
    dropped_long: int = 0
    rows: int = 0
    unpruned: int = 0
    kappa_strategy: dict = field(default_factory=dict)  # "kappa=0.8 strategy=low" -> rows
    models: list[str] = field(default_factory=list)
    max_sequence_tokens: int = 0


def pruned_files(source) -> list[Path]:
    """The shard files of ``source``, each checked to be a ``pruned`` shard before any is read."""

    from stepprune.schema import PRUNED, check_file
    from stepprune.shards import shard_files

    files = shard_files(source) if source else []
    if not files:
        raise FileNotFoundError(f"no pruned shards in {source!r} (run `stepprune prune` first)")
    for f in files:
        check_file(f, PRUNED)
    return files


def render_completion(prompt: str, thinking: str, answer: str) -> str:
    """The assistant text for ``thinking`` and ``answer``, in the prune stage's format."""
    opened = prompt.rstrip().endswith(THINK_OPEN)
    inner = thinking.strip()
    head = inner if opened else f"{THINK_OPEN}\n{inner}"
    return f"{head}\n{THINK_CLOSE}\n\n{answer.strip()}"


def read_rows(files: list[Path], cfg, report: DataReport) -> list[dict]:
    """Rows of ``files`` passing the correct/kappa/strategy filters, in file order."""
    import pyarrow.parquet as pq

    from stepprune.schema import PRUNED, check_nulls

    rows = []
    for f in files:
        table = pq.read_table(f, columns=COLUMNS)
        check_nulls(table, PRUNED, str(f))
        rows.extend(table.to_pylist())
    report.files = [str(f) for f in files]
    report.rows_in = len(rows)
    keep = []
    for r in rows:
        if cfg.correct_only and not r["correct"]:
            report.dropped_incorrect += 1
        elif cfg.kappa is not None and abs(r["kappa"] - cfg.kappa) > 1e-6:
            report.dropped_kappa += 1
        elif cfg.strategy is not None and r["strategy"] != cfg.strategy:
            report.dropped_strategy += 1
        else:
            keep.append(r)
    return keep


def unpruned_completion(row: dict) -> str:
    """The completion of ``row`` with its original, unpruned thinking."""
    return render_completion(row["prompt"], row["original_thinking"], row["answer_text"])


def mix_unpruned(
    rows: list[dict], encoded: list, cfg, tokenizer, plain, report: DataReport
) -> list[tuple[list[int], int]]:
    """Switch exactly round(fraction x len(rows)) seeded rows to their unpruned thinking, in
    place, choosing only among rows whose unpruned sequence fits ``max_tokens``; every row's
    (ids, prompt length) as trained on."""
    import numpy as np

    n = round(cfg.unpruned_fraction * len(rows))
    if n == 0:
        return encoded
    unpruned = [{**r, "completion": unpruned_completion(r)} for r in rows]
    unpruned_encoded = encode_rows(unpruned, tokenizer, plain)
    fits = [
        i
        for i, (ids, _) in enumerate(unpruned_encoded)
        if cfg.max_tokens is None or len(ids) <= cfg.max_tokens
    ]
    if len(fits) < n:
        raise ValueError(
            f"unpruned_fraction {cfg.unpruned_fraction} asks for {n} of {len(rows)} rows with "
            f"their unpruned thinking, but only {len(fits)} fit max_tokens {cfg.max_tokens} "
            f"that way: lower unpruned_fraction or raise max_tokens ({_counts(report)})"
        )
    encoded = list(encoded)
    for i in map(int, np.random.default_rng(cfg.seed).choice(fits, size=n, replace=False)):
        rows[i]["completion"], rows[i]["unpruned"] = unpruned[i]["completion"], True
        encoded[i] = unpruned_encoded[i]
    return encoded


def added_bos(tokenizer) -> str:
    """The BOS text the tokenizer prepends by itself when encoding ("" if it adds none)."""
    bos = tokenizer.bos_token
    adds = bool(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return bos if adds else ""


def encode_rows(rows: list[dict], tokenizer, plain=None, batch: int = 512) -> list:
    """(training ids, prompt length) of each row: the prompt (through ``plain`` when given, so
    a quoted "[SKIP]" stays text), the completion, then one EOS (module docstring)."""
    eos = tokenizer.eos_token or ""
    out = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        prompts = [r["prompt"] for r in chunk]
        if plain is not None:
            prompt_ids = [e.ids for e in plain.encode_batch(prompts, add_special_tokens=True)]
        else:
            prompt_ids = tokenizer(prompts)["input_ids"]
        completions = [r["completion"] for r in chunk]
        completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
        for p, c, text in zip(prompt_ids, completion_ids, completions, strict=True):
            tail = [tokenizer.eos_token_id] if eos and not text.endswith(eos) else []
            out.append(([*p, *c, *tail], len(p)))
    return out


def build_dataset(files: list[Path], cfg, tokenizer):
    """(``datasets.Dataset`` of prompt/completion strings, ``DataReport``); see module rules."""
    from datasets import Dataset

    report = DataReport()
    rows = read_rows(files, cfg, report)
    from stepprune.train.skip_token import plain_text_encoder

    bos = added_bos(tokenizer)
    for r in rows:
        r["prompt"] = r["prompt"].removeprefix(bos) if bos else r["prompt"]
    plain = plain_text_encoder(tokenizer)
    encoded = encode_rows(rows, tokenizer, plain)
    if cfg.max_tokens is not None:
        kept = [(r, e) for r, e in zip(rows, encoded, strict=True) if len(e[0]) <= cfg.max_tokens]
        report.dropped_long = len(rows) - len(kept)
        rows, encoded = [r for r, _ in kept], [e for _, e in kept]
    if not rows:
        raise ValueError(f"no training rows left after filtering: {_counts(report)}")
    report.rows = len(rows)
    encoded = mix_unpruned(rows, encoded, cfg, tokenizer, plain, report)
    report.unpruned = sum(1 for r in rows if r.get("unpruned"))
    report.max_sequence_tokens = max(len(ids) for ids, _ in encoded)
    groups = Counter(f"kappa={r['kappa']:.3g} strategy={r['strategy']}" for r in rows)
    report.kappa_strategy = dict(sorted(groups.items()))
    report.models = sorted({r["model"] for r in rows})
    data = {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    data["input_ids"] = [ids for ids, _ in encoded]
    data["completion_mask"] = [[0] * n + [1] * (len(ids) - n) for ids, n in encoded]
    _log_quoted_skips(rows, tokenizer, plain)
    log.info("SFT data: %s", _counts(report))
    return Dataset.from_dict(data), report


def _log_quoted_skips(rows: list[dict], tokenizer, plain) -> None:
    quoted = sum(SKIP_TOKEN in r["prompt"] for r in rows)
    if not quoted:
        return
    if plain is not None:
        log.info(
            "%d prompts quote %s: encoded as text, as the base model read it", quoted, SKIP_TOKEN
        )
    elif SKIP_TOKEN in tokenizer.get_vocab():
        log.warning(
            "%d prompts quote %s, which this tokenizer (no Rust backend) encodes as the token",
            quoted,
            SKIP_TOKEN,
        )


def _counts(report: DataReport) -> str:
    return (
        f"{report.rows_in} rows in {len(report.files)} shards; dropped "
        f"{report.dropped_incorrect} incorrect, {report.dropped_kappa} other kappa, "
        f"{report.dropped_strategy} other strategy, {report.dropped_long} too long; "
        f"{report.rows} kept ({report.unpruned} unpruned)"
    )
