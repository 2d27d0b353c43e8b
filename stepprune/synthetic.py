"""Synthetic trajectories in generations-shard format, for tests and benchmarks.

``make_row`` builds one fully consistent row from step texts and per-token entropies (each
step's tokens are its characters' share; separators are blank lines). ``synthetic_table``
builds many rows at once with numpy/pyarrow, fast enough for the 70k-trajectory benchmark.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from stepprune.schema import GENERATIONS

PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


def make_row(
    problem_id: str,
    step_texts: list[str],
    step_entropies: list[list[float]],
    *,
    sample_index: int = 0,
    separators: list[str] | None = None,
    answer: str = "So the answer is \\boxed{1}.",
    correct: bool = True,
    lead: str = "",
    tail: str = "\n",
) -> dict:
    """A generations row whose thinking is ``lead + sep_0 + step_0 + ... + tail``."""
    seps = separators or [""] + ["\n\n"] * (len(step_texts) - 1)
    thinking, steps, tok = lead, [], 0
    for k, (text, ents) in enumerate(zip(step_texts, step_entropies, strict=True)):
        thinking += seps[k]
        start = len(thinking)
        thinking += text
        n = len(ents)
        total = float(np.sum(ents, dtype=np.float64))
        steps.append(
            dict(
                index=k,
                text="" if text == "[SKIP]" else text,
                separator=seps[k] if k else lead + seps[k],
                char_start=start,
                char_end=len(thinking),
                token_start=tok,
                token_end=tok + n,
                n_tokens=n,
                entropy_sum=total,
                entropy_mean=total / n if n else 0.0,
                is_skip=text == "[SKIP]",
            )
        )
        tok += n
    thinking += tail
    completion = thinking + "</think>" + answer
    ents = [float(e) for step in step_entropies for e in step] + [0.1] * 3
    return dict(
        problem_id=problem_id,
        sample_index=sample_index,
        source="synthetic",
        problem="Q",
        gold_answer="1",
        prompt=PROMPT,
        prompt_token_ids=[1, 2, 3],
        completion=completion,
        think_format="think_tags",
        thinking=thinking,
        answer_text=answer,
        thinking_char_start=0,
        thinking_char_end=len(thinking),
        answer_char_start=len(thinking) + len("</think>"),
        token_ids=list(range(len(ents))),
        token_entropies=ents,
        token_logprobs=[-0.5] * len(ents),
        token_entropy_lower=None,
        token_entropy_upper=None,
        token_tail_mass=None,
        entropy_source="exact",
        entropy_topk=None,
        n_tokens=len(ents),
        n_thinking_tokens=tok,
        steps=steps,
        n_steps=len(steps),
        step_pattern=r"\n\s*\n",
        extracted_answer="1",
        correct=correct,
        finish_reason="stop",
        model="synthetic",
        backend="synthetic",
        seed=0,
        sampling="{}",
        versions=json.dumps({}),
        created_at="2026-01-01T00:00:00+00:00",
    )


def _list(values: np.ndarray, lengths: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=typ))


def synthetic_table(
    n_rows: int, steps: int = 30, tokens_per_step: int = 100, seed: int = 0, start: int = 0
) -> pa.Table:
    """``n_rows`` trajectories of ``steps`` steps x ``tokens_per_step`` tokens (4 chars each)."""
    rng = np.random.default_rng(seed)
    n_steps = np.full(n_rows, steps)
    n_tok = steps * tokens_per_step
    ents = rng.gamma(0.6, 1.0, size=(n_rows, n_tok)).astype(np.float32)
    step_sum = ents.reshape(n_rows, steps, tokens_per_step).sum(-1, dtype=np.float64)
    texts, starts, ends, thinking = _random_texts(rng, n_rows, steps, tokens_per_step * 4)
    idx = np.tile(np.arange(steps), n_rows)
    sep = np.where(idx == 0, "", "\n\n")
    step_struct = pa.StructArray.from_arrays(
        [
            pa.array(idx, pa.int32()),
            pa.array(texts),
            pa.array(sep),
            pa.array(starts, pa.int32()),
            pa.array(ends, pa.int32()),
            pa.array(idx * tokens_per_step, pa.int32()),
            pa.array((idx + 1) * tokens_per_step, pa.int32()),
            pa.array(np.full(idx.size, tokens_per_step), pa.int32()),
            pa.array(step_sum.ravel(), pa.float32()),
            pa.array(step_sum.ravel() / tokens_per_step, pa.float32()),
            pa.array(np.zeros(idx.size, bool)),
        ],
        fields=list(GENERATIONS.arrow.field("steps").type.value_type),
    )
    ids = np.tile(np.arange(n_tok, dtype=np.int32) % 30000, n_rows)
    answer = "So the answer is \\boxed{1}."
    const = {
        "source": "synthetic",
        "problem": "Q",
        "gold_answer": "1",
        "prompt": PROMPT,
        "think_format": "think_tags",
        "answer_text": answer,
        "entropy_source": "exact",
        "step_pattern": r"\n\s*\n",
        "extracted_answer": "1",
        "finish_reason": "stop",
        "model": "synthetic",
        "backend": "synthetic",
        "sampling": "{}",
        "versions": "{}",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    cols = {
        "problem_id": pa.array([f"p{start + i}" for i in range(n_rows)]),
        "sample_index": pa.array(np.zeros(n_rows, np.int32)),
        "prompt_token_ids": _list(np.ones(3 * n_rows, np.int32), np.full(n_rows, 3), pa.int32()),
        "thinking_char_start": pa.array(np.zeros(n_rows, np.int32)),
        "thinking": pa.array(thinking, pa.string()),
        "completion": pa.array([t + "</think>" + answer for t in thinking], pa.string()),
        "thinking_char_end": pa.array([len(t) for t in thinking], pa.int32()),
        "answer_char_start": pa.array([len(t) + 8 for t in thinking], pa.int32()),
        "token_ids": _list(ids, np.full(n_rows, n_tok), pa.int32()),
        "token_entropies": _list(ents.ravel(), np.full(n_rows, n_tok), pa.float32()),
        "token_logprobs": _list(-ents.ravel(), np.full(n_rows, n_tok), pa.float32()),
        "n_tokens": pa.array(np.full(n_rows, n_tok, np.int32)),
        "n_thinking_tokens": pa.array(np.full(n_rows, n_tok, np.int32)),
        "steps": _list_struct(step_struct, n_steps),
        "n_steps": pa.array(n_steps.astype(np.int32)),
        "correct": pa.array(rng.random(n_rows) < 0.9),
        "seed": pa.array(np.zeros(n_rows, np.int64)),
    }
    for name, value in const.items():
        cols[name] = pa.array([value] * n_rows, pa.string())
    for name in ("token_entropy_lower", "token_entropy_upper", "token_tail_mass"):
        cols[name] = pa.nulls(n_rows, pa.list_(pa.float32()))
    cols["entropy_topk"] = pa.nulls(n_rows, pa.int32())
    return pa.table(
        {f.name: cols[f.name] for f in GENERATIONS.arrow}, schema=GENERATIONS.with_metadata()
    )


_WORDS = np.array(
    [
        "the",
        "a",
        "of",
        "to",
        "and",
        "is",
        "we",
        "so",
        "then",
        "let",
        "x",
        "y",
        "sum",
        "total",
        "each",
        "step",
        "half",
        "twice",
        "number",
        "value",
        "apples",
        "price",
        "3",
        "7",
        "12",
        "45",
        "100",
        "=",
        "+",
        "-",
        "*",
        "/",
        ",",
        ".",
    ]
)


def _random_texts(rng, n_rows: int, steps: int, chars: int):
    """Different random step texts for every row (a dictionary-free, realistic string load)."""
    base = " ".join(_WORDS[rng.integers(0, len(_WORDS), size=n_rows * steps * chars // 4)])
    offsets = rng.integers(0, len(base) - chars, size=n_rows * steps)
    texts = [base[o : o + chars].strip() or "x" for o in offsets.tolist()]
    starts, ends, thinking = [], [], []
    for r in range(n_rows):
        pos, row = 0, texts[r * steps : (r + 1) * steps]
        for k, t in enumerate(row):
            pos += 2 if k else 0
            starts.append(pos)
            pos += len(t)
            ends.append(pos)
        thinking.append("\n\n".join(row) + "\n")
    return texts, np.array(starts), np.array(ends), thinking


def _list_struct(values: pa.StructArray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)
