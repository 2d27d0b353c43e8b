"""Steps: thinking split, char-level step splitting, token spans that partition the thinking."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stepprune.cot.steps import (
    assign_tokens,
    build_steps,
    count_thinking_tokens,
    split_steps,
    split_thinking,
    token_char_offsets,
)


def test_split_steps_literal():
    text = "  a b\n\nc\n \n\n\nd  \n\n   \n\n"
    spans = split_steps(text)
    assert [text[s:e] for s, e in spans] == ["a b", "c", "d"]
    assert spans == [(2, 5), (7, 8), (13, 14)]


def test_duplicate_steps_are_kept_in_order():
    text = "same\n\nsame\n\nother\n\nsame"
    assert [text[s:e] for s, e in split_steps(text)] == ["same", "same", "other", "same"]


def test_custom_pattern():
    text = "a\nb\nc"
    assert [text[s:e] for s, e in split_steps(text, pattern=r"\n")] == ["a", "b", "c"]


def test_split_thinking_think_tags():
    c = "<think>\nstep one\n\nstep two\n</think>\n\nSo \\boxed{3}"
    s = split_thinking(c)
    assert s.think_format == "think_tags"
    assert c[s.thinking_start : s.thinking_end] == "\nstep one\n\nstep two\n"
    assert c[s.answer_start :] == "\n\nSo \\boxed{3}"


def test_split_thinking_truncated_reasoning_model():
    c = "step one\n\nstep two"
    s = split_thinking(c, think_open=True)
    assert (s.think_format, s.thinking_end, s.answer_start) == ("think_tags", len(c), len(c))


def test_split_thinking_final_paragraph_with_boxed():
    c = "First 3+5=8.\n\nCheck: 8.\n\nThe answer is \\boxed{8}.\n\nHope it helps."
    s = split_thinking(c)
    assert s.think_format == "final_paragraph"
    assert c[: s.thinking_end] == "First 3+5=8.\n\nCheck: 8."
    assert c[s.answer_start :] == "The answer is \\boxed{8}.\n\nHope it helps."


def test_split_thinking_final_paragraph_without_boxed():
    c = "First.\n\nSecond.\n\nSo it is 8.\n\n"
    s = split_thinking(c)
    assert c[: s.thinking_end] == "First.\n\nSecond."
    assert c[s.answer_start :] == "So it is 8.\n\n"
    one = split_thinking("Just \\boxed{2}")
    assert (one.thinking_end, one.answer_start) == (0, 0)


def _offsets_from_pieces(pieces):
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    return offsets


def test_merged_separator_tokens_literal():
    # Tokens ".\n\n" and "\n\nThe" merge the separator into neighbours.
    pieces = ["A", ".\n\n", "B", " c", "\n\nThe", " end", "</think>", "ok"]
    text = "".join(pieces)
    offsets = _offsets_from_pieces(pieces)
    split = split_thinking(text)
    ent = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    steps, n_think = build_steps(text, offsets, ent, split)
    assert n_think == 6
    assert [(s.text, s.token_start, s.token_end) for s in steps] == [
        ("A.", 0, 2),
        ("B c", 2, 4),
        ("The end", 4, 6),
    ]
    assert [s.entropy_sum for s in steps] == [3.0, 7.0, 11.0]
    assert steps[2].entropy_mean == 5.5


def test_skip_steps_are_recognised():
    text = "a\n\n[SKIP]\n\n[SKIP]\n\nb"
    offsets = [(i, i + 1) for i in range(len(text))]
    steps, _ = build_steps(text, offsets, [0.5] * len(text), split_thinking(text + "</think>"))
    assert [(s.text, s.is_skip) for s in steps] == [
        ("a", False),
        ("", True),
        ("", True),
        ("b", False),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "b c", ".", "\n", "\n\n", " ", "x\n\ny", "[SKIP]"]), max_size=40
    ),
    st.randoms(use_true_random=False),
)
def test_token_spans_partition_thinking(pieces, rnd: random.Random):
    text = "".join(pieces)
    offsets = _offsets_from_pieces(pieces)
    think_end = rnd.randint(0, len(text))
    n_think = count_thinking_tokens(offsets, think_end)
    spans = split_steps(text, 0, think_end)
    tspans = assign_tokens(spans, offsets, n_think)
    if spans:
        assert tspans[0][0] == 0 and tspans[-1][1] == n_think
        for (a0, a1), (b0, _b1) in zip(tspans, tspans[1:], strict=False):
            assert a1 == b0 and a0 <= a1
        # Each step's first character lies inside its first token (if it has one).
        for (c0, _), (t0, t1) in zip(spans, tspans, strict=True):
            if t1 > t0:
                s, e = offsets[t0]
                assert s <= c0 < e or (t0 == 0 and c0 >= s)
    assert all(text[s:e].strip() for s, e in spans)


def test_token_char_offsets_byte_level(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Über café\n\nnaïve 数学 ∑\n\n\n√2 ≈ 1.414 <|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = token_char_offsets(tok, ids)
    assert decoded == text
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:], strict=False))
    # Independent check: each prefix decode has exactly the length of the offsets so far,
    # whenever that prefix ends on a complete character.
    for i in range(len(ids)):
        prefix = tok.decode(ids[: i + 1])
        if not prefix.endswith("\ufffd"):
            assert len(prefix) == offsets[i][1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b c", "\n", "\n\n", " ", "\n \n", "[SKIP]", "x"]), max_size=30)
)
def test_separators_and_texts_rebuild_the_thinking(pieces):
    text = "".join(pieces) + "</think>answer"
    split = split_thinking(text)
    offsets = [(i, i + 1) for i in range(len(text))]
    steps, _ = build_steps(text, offsets, [0.0] * len(text), split)
    body = "".join(s.separator + ("[SKIP]" if s.is_skip else s.text) for s in steps)
    tail_start = steps[-1].char_end if steps else split.thinking_start
    assert body + text[tail_start : split.thinking_end] == text[: split.thinking_end]
    assert all(not s.separator.strip() for s in steps)  # separators are whitespace only
