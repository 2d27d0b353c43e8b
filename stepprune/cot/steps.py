"""Reasoning steps: the thinking/answer split, step splitting by characters, and token spans.

Steps are found in *text*, never by matching token strings, so tokenizers that merge the blank
line into neighbouring tokens (``.\\n\\n``, ``\\n\\nThe``) split the same way as any other.

Rules (documented in README "Steps"):
- Thinking part: with ``<think>``/``</think>`` in the completion (or a prompt that opens
  ``<think>``), the text before ``</think>``; cut off before ``</think>``, all of it.
  Without think tags (instruct models): everything before the paragraph holding the last
  ``\\boxed``; with no ``\\boxed``, everything before the last paragraph.
- A step is the whitespace-stripped text between separators (default: a blank line); empty
  segments make no step. Every ``[SKIP]`` is a skipped step with no text, also when a segment
  holds several or holds text beside it (``[SKIP][SKIP]``, ``a [SKIP] b``: a, skip, b).
- Token char spans: a token owns the characters whose first byte it carries, so a multi-byte
  character split over tokens (byte fallback ``<0xE2>``, byte-level BPE) belongs to the token
  with its first byte, and a token holding only later bytes of one owns nothing.
- Token assignment: step k starts at the first token carrying any byte of step k's first
  character (step 0 at token 0), and every other token goes with the token before it. So
  separator-only tokens stay with the step before, while a token straddling a blank line
  (``.\\n\\nThird``) opens the next step. The spans partition the thinking tokens exactly.
- A token straddling the end of the thinking part belongs to the answer part.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from dataclasses import dataclass

from stepprune.cot.entropy import step_entropy

DEFAULT_STEP_PATTERN = r"\n\s*\n"
SKIP_TOKEN = "[SKIP]"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ThinkingSplit:
    think_format: str  # "think_tags" | "final_paragraph"
    thinking_start: int
    thinking_end: int
    answer_start: int


def split_thinking(
    completion: str, step_pattern: str = DEFAULT_STEP_PATTERN, think_open: bool = False
) -> ThinkingSplit:
    """Where thinking and answer lie; ``think_open``: the prompt already opened ``<think>``."""
    close = completion.find(THINK_CLOSE)
    opening = completion.find(THINK_OPEN, 0, close if close >= 0 else len(completion))
    start = opening + len(THINK_OPEN) if opening >= 0 else 0
    if close >= 0:
        return ThinkingSplit("think_tags", start, close, close + len(THINK_CLOSE))
    if think_open or opening >= 0:
        # A reasoning model cut off before </think>: all of it is thinking, no answer.
        n = len(completion)
        return ThinkingSplit("think_tags", start, n, n)
    boxed = completion.rfind("\\boxed")
    # The answer paragraph must start at or before the last \boxed, or hold real text.
    limit = boxed if boxed >= 0 else len(completion.rstrip()) - 1
    seps = [m for m in re.finditer(step_pattern, completion) if m.end() <= limit]
    if not seps:
        return ThinkingSplit("final_paragraph", 0, 0, 0)
    return ThinkingSplit("final_paragraph", 0, seps[-1].start(), seps[-1].end())


def split_steps(
    text: str, start: int = 0, end: int | None = None, pattern: str = DEFAULT_STEP_PATTERN
) -> list[tuple[int, int]]:
    """Char spans (in ``text``) of the non-empty, whitespace-stripped steps of text[start:end]."""
    end = len(text) if end is None else end
    spans, pos = [], start
    bounds = [(m.start(), m.end()) for m in re.compile(pattern).finditer(text, start, end)]
    for seg_start, seg_end in [(pos, bounds[0][0] if bounds else end)] + [
        (b[1], bounds[i + 1][0] if i + 1 < len(bounds) else end) for i, b in enumerate(bounds)
    ]:
        for piece_start, piece_end in _skip_pieces(text, seg_start, seg_end):
            seg = text[piece_start:piece_end]
            stripped = seg.strip()
            if stripped:
                lead = len(seg) - len(seg.lstrip())
                spans.append((piece_start + lead, piece_start + lead + len(stripped)))
    return spans


def _skip_pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """text[start:end] cut before and after every [SKIP], so each [SKIP] is a piece of its own
    (a model may write ``[SKIP][SKIP]`` or ``a [SKIP] b`` without blank lines between)."""
    cuts = [start]
    for m in re.finditer(re.escape(SKIP_TOKEN), text[start:end]):
        cuts += [start + m.start(), start + m.end()]
    cuts.append(end)
    return list(itertools.pairwise(cuts))


def token_char_offsets(tokenizer, token_ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``token_ids`` incrementally; return the text and each token's [start, end) chars.

    A token owns the characters whose first byte it carries (module rules): the token that
    starts a multi-byte character owns it, tokens holding only its later bytes get an empty
    span. Special tokens decode as their text (``skip_special_tokens=False``). Byte-level BPE
    tokenizers take the fast path of ``cot.byte_offsets`` (the same spans, one decode in all).
    """
    from stepprune.cot.byte_offsets import byte_level_offsets, is_byte_level

    if is_byte_level(tokenizer):
        reference = tokenizer.decode(token_ids, skip_special_tokens=False)
        fast = byte_level_offsets(tokenizer, token_ids, reference)
        if fast is not None:
            return fast
    return incremental_offsets(tokenizer, token_ids)


def incremental_offsets(tokenizer, token_ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """``token_char_offsets`` by decoding a short window before and after every token."""
    text, offsets, window = "", [], 6
    pending_from, waiting = 0, []  # waiting: decodes ending inside a character not yet complete
    for i in range(len(token_ids)):
        lo = max(0, pending_from - window)
        prefix = tokenizer.decode(token_ids[lo:pending_from], skip_special_tokens=False)
        full = tokenizer.decode(token_ids[lo : i + 1], skip_special_tokens=False)
        if full.endswith("\ufffd") and i + 1 < len(token_ids):
            waiting.append(full)
            continue
        base = len(prefix) if full.startswith(prefix) else 0
        delta = full[base:]
        ends = [e - base for e in _chars_begun(waiting, full, base)] + [len(delta)]
        offsets += [(len(text) + s, len(text) + e) for s, e in _clamped_spans(ends, len(delta))]
        text += delta
        pending_from, waiting = i + 1, []
    reference = tokenizer.decode(token_ids, skip_special_tokens=False)
    if text != reference:
        return _quadratic_offsets(tokenizer, token_ids)
    return text, offsets


def _chars_begun(partials: list[str], final: str, complete: int) -> list[int]:
    """For decodes of ever longer token prefixes, how many chars of ``final`` each has begun.

    A decode that is a prefix of ``final`` has begun exactly its chars. One that is not ends in
    the first bytes of a char, shown as U+FFFD, and has begun one char more than it shares with
    ``final``, and at least one more than the last complete decode (``complete`` chars): Llama's
    byte-fallback decoder shows a whole run of byte tokens as U+FFFD while one is incomplete, so
    "\\n\\n" followed by <0xE2> decodes as three U+FFFD and hides the two newlines.
    """
    ends = []
    for partial in partials:
        shared = len(os.path.commonprefix([partial, final]))
        if shared == len(partial):
            complete = shared
            ends.append(shared)
        else:
            ends.append(max(shared, complete) + 1)
    return ends


def _clamped_spans(ends: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) spans from running ends, kept within [0, limit] and monotone."""
    spans, start = [], 0
    for end in ends:
        end = min(max(end, start), limit)
        spans.append((start, end))
        start = end
    return spans


def _quadratic_offsets(tokenizer, token_ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    # Exact but O(n^2): only for tokenizers whose windowed decode disagrees with a full decode.
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    partials = [
        tokenizer.decode(token_ids[: i + 1], skip_special_tokens=False)
        for i in range(len(token_ids) - 1)
    ]
    ends = _chars_begun(partials, text, 0) + [len(text)]
    return text, _clamped_spans(ends, len(text)) if token_ids else []


def count_thinking_tokens(offsets: list[tuple[int, int]], thinking_end: int) -> int:
    """Tokens lying wholly before ``thinking_end`` (a straddling token goes to the answer)."""
    ends = [e for _, e in offsets]
    return bisect.bisect_right(ends, thinking_end)


def assign_tokens(
    step_spans: list[tuple[int, int]], offsets: list[tuple[int, int]], n_thinking: int
) -> list[tuple[int, int]]:
    """Token spans of the steps; they partition range(n_thinking) (see module rules)."""
    if not step_spans:
        return []
    ends = [e for _, e in offsets[:n_thinking]]
    starts = [0] + [min(bisect.bisect_right(ends, c0), n_thinking) for c0, _ in step_spans[1:]]
    bounds = starts + [n_thinking]
    return [(bounds[k], max(bounds[k], bounds[k + 1])) for k in range(len(step_spans))]


@dataclass(frozen=True)
class StepRecord:
    index: int
    text: str
    separator: str  # the text between the previous step (or thinking start) and this one
    char_start: int
    char_end: int
    token_start: int
    token_end: int
    n_tokens: int
    entropy_sum: float
    entropy_mean: float
    is_skip: bool


def build_steps(
    completion: str,
    offsets: list[tuple[int, int]],
    entropies: list[float],
    split: ThinkingSplit,
    pattern: str = DEFAULT_STEP_PATTERN,
) -> tuple[list[StepRecord], int]:
    """Steps of the thinking part with their token spans and entropy sums; and n_thinking."""
    n_thinking = count_thinking_tokens(offsets, split.thinking_end)
    spans = split_steps(completion, split.thinking_start, split.thinking_end, pattern)
    token_spans = assign_tokens(spans, offsets, n_thinking)
    steps, prev_end = [], split.thinking_start
    for k, ((c0, c1), (t0, t1)) in enumerate(zip(spans, token_spans, strict=True)):
        total = step_entropy(entropies, (t0, t1))
        text = completion[c0:c1]
        is_skip = text == SKIP_TOKEN
        mean = step_entropy(entropies, (t0, t1), "mean")
        sep = completion[prev_end:c0]
        body = "" if is_skip else text
        steps.append(StepRecord(k, body, sep, c0, c1, t0, t1, t1 - t0, total, mean, is_skip))
        prev_end = c1
    return steps, n_thinking
