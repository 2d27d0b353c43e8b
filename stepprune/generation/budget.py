"""Budget forcing (s1, arXiv 2501.19393): the thinking is cut at N tokens and the answer forced.

Every completion is first sampled with ``max_new_tokens`` = N (``thinking_budget``). One that ends
within N tokens is kept as it is. One cut at N gets the lead-in ``stepprune eval`` uses (the
``</think>`` close for reasoning models, "Therefore, the final answer is $\\boxed{" for instruct
models; ``data.prompts``) and the model writes its answer after it, in at most
``answer_tokens`` (default 64) more tokens, sampled as the first part was. The row's completion
is all three parts, so its length counts the answer and the lead-in. The lead-in's tokens were
not sampled: they carry entropy 0 and log-prob 0 (probability 1 under forcing).
"""

from __future__ import annotations

import dataclasses

from stepprune.cot.steps import THINK_CLOSE, THINK_OPEN
from stepprune.data.prompts import INSTRUCT_LEAD_IN, THINK_LEAD_IN

ANSWER_TOKENS = 64


def lead_in(prompt_text: str, completion_text: str) -> str:
    """The reasoning lead-in when the thinking is open (prompt or completion opened <think>)."""
    opened = prompt_text.rstrip().endswith(THINK_OPEN) or THINK_OPEN in completion_text
    return THINK_LEAD_IN if opened and THINK_CLOSE not in completion_text else INSTRUCT_LEAD_IN


def joined(first, forced_ids: list[int], second):
    """One Completion: the cut thinking, the forced lead-in, then the answer."""
    zeros = [0.0] * len(forced_ids)

    def cat(a, b):
        return None if a is None or b is None else [*a, *zeros, *b]

    return dataclasses.replace(
        first,
        token_ids=[*first.token_ids, *forced_ids, *second.token_ids],
        entropies=[*first.entropies, *zeros, *second.entropies],
        logprobs=[*first.logprobs, *zeros, *second.logprobs],
        finish_reason=second.finish_reason,
        entropy_lower=cat(first.entropy_lower, second.entropy_lower),
        entropy_upper=cat(first.entropy_upper, second.entropy_upper),
        tail_mass=cat(first.tail_mass, second.tail_mass),
        topk_logprobs=None,
    )


def force_answers(backend, prompts: list[tuple[str, list[int]]], comps: list, spec, cfg) -> list:
    """``comps`` with every completion cut at the budget continued after its lead-in."""
    tokenizer = backend.tokenizer
    cut = [i for i, c in enumerate(comps) if c.finish_reason == "length"]
    if not cut:
        return comps
    forced, second_prompts = {}, []
    for i in cut:
        text = tokenizer.decode(comps[i].token_ids, skip_special_tokens=False)
        ids = tokenizer(lead_in(prompts[i][0], text), add_special_tokens=False)["input_ids"]
        forced[i] = ids
        second_prompts.append([*prompts[i][1], *comps[i].token_ids, *ids])
    budget = cfg.answer_tokens or ANSWER_TOKENS
    answers = backend.generate(second_prompts, dataclasses.replace(spec, max_new_tokens=budget))
    out = list(comps)
    for i, answer in zip(cut, answers, strict=True):
        out[i] = joined(comps[i], forced[i], answer)
    return out
