"""The generation engine of a run: ``open_engine`` (the backend and the run record every row
carries) and ``generate_batch`` (a batch of (problem, sample) items -> generations rows, streamed
as they finish, or, with a thinking budget, forced to answer: ``generation.budget``). Used by the
generate stage, bench (through generate) and the Ray workers."""

from __future__ import annotations

import dataclasses

from stepprune.data.prompts import render_prompt
from stepprune.generation.sampling import RESUME_KEYS, sampling_spec


def open_engine(cfg, model_path: str) -> tuple:
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


def _sampling_record(cfg, backend) -> dict:
    record = {k: getattr(cfg, k) for k in (*RESUME_KEYS, "n_samples", "batch_size")}
    record.update(getattr(backend, "provenance", dict)())
    return record


def generate_batch(cfg, backend, batch, info):
    """Yield the batch's rows as they are ready: one at a time from a streaming backend (vLLM,
    whose batch can be a whole set; built beside the engine, ``overlapped``), all at once from
    the others."""
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
    if cfg.thinking_budget is not None:
        from stepprune.generation.budget import force_answers

        cut = dataclasses.replace(spec, max_new_tokens=cfg.thinking_budget)
        comps = force_answers(backend, prompts, backend.generate(token_ids, cut), spec, cfg)
        yield [row(i, c) for i, c in enumerate(comps)]
    elif hasattr(backend, "generate_stream"):
        stream = backend.generate_stream(token_ids, spec, raw=True)
        yield from overlapped(stream, lambda i, out: row(i, backend.completion(out)))
    else:
        yield [row(i, c) for i, c in enumerate(backend.generate(token_ids, spec))]


def overlapped(stream, build):
    """``[build(i, comp)]`` for each ``(i, comp)`` of ``stream``, in its order, each row built in
    a worker thread while the engine goes on stepping: a streaming engine otherwise waits for
    every row (offsets, steps, grading) before its next step. Grading off the main thread keeps
    its hard time limit through ``data.bounded``'s helper process."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepprune-rows")
    pending: collections.deque = collections.deque()
    try:
        for i, comp in stream:
            pending.append(pool.submit(build, i, comp))
            while pending and pending[0].done():
                yield [pending.popleft().result()]
        while pending:
            yield [pending.popleft().result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stop loses only unbuilt rows
        stream.close()  # aborts the engine's unfinished requests


def hash_id(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
