"""eval's answering: the greedy answering engine, and a batch of distinct answer prompts ->
answers with their grades. Used by the eval stage and its Ray workers."""

from __future__ import annotations

import time


def answer_engine(cfg):
    """The answering backend of an eval run and its greedy spec."""
    from stepprune.backends import SamplingSpec, load_backend
    from stepprune.models import resolve_model

    backend = load_backend(
        cfg.backend, resolve_model(cfg.model), dtype=cfg.dtype, **cfg.engine_kwargs
    )
    spec = SamplingSpec(
        greedy=True, max_new_tokens=cfg.answer_tokens, seed=cfg.seed, extra=cfg.sampling_kwargs
    )
    return backend, spec


def answer_batch(batch, backend, spec, cfg):
    """Answers and grades for a batch of distinct prompts (``_pid``, ``_ids``, lead-in, gold)."""
    import polars as pl

    from stepprune.cot.trajectory import completion_text
    from stepprune.data import grading

    prompts = batch["_ids"].to_list()
    comps = backend.generate(prompts, spec)
    texts, extracted, correct = [], [], []
    for comp, lead, gold in zip(comps, batch["answer_lead_in"], batch["gold_answer"], strict=True):
        text, _ = completion_text(backend.tokenizer, comp.token_ids, backend.stop_ids)
        grade = grading.grade(lead + text, gold, timeout=cfg.grade_timeout)
        texts.append(text)
        extracted.append(grade.extracted)
        correct.append(grade.correct)
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return batch.select("_pid").with_columns(
        answer_prompt_tokens=pl.Series([len(p) for p in prompts], dtype=pl.Int32),
        answer_text=pl.Series(texts, dtype=pl.String),
        answer_finish_reason=pl.Series([c.finish_reason for c in comps], dtype=pl.String),
        extracted_answer=pl.Series(extracted, dtype=pl.String),
        correct=pl.Series(correct, dtype=pl.Boolean),
        created_at=pl.lit(created),
    )


def answered_rows(variants, answers, cfg, label: str) -> list[dict]:
    """The result rows of ``variants`` answered by ``answers`` (``answer_batch``), as written
    (local and Ray alike)."""
    import polars as pl

    rows = variants.join(answers, on="_pid", how="inner").drop("_t", "_pid", "model")
    return rows.with_columns(backend=pl.lit(cfg.backend), model=pl.lit(label)).to_dicts()
