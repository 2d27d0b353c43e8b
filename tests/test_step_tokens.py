"""Token char spans and token-to-step assignment on real tokenizers that split characters.

Two offline tokenizers cut multi-byte characters into several tokens: the tiny byte-level BPE
(GPT-2/Qwen style, ``tiny_model_dir``) and a Llama-style SentencePiece BPE with byte fallback
(``<0xE2>`` tokens) built here. The truths are computed from each token's *bytes*, read from
its vocabulary entry, never from the code under test: a token owns the characters whose first
byte it carries, and step k starts at the token carrying the first byte of its first character.
"""

import re
import string
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepprune.cot.steps import _quadratic_offsets, build_steps, split_thinking, token_char_offsets

SPACE = "\u2581"  # SentencePiece's visible space


@cache
def byte_fallback_tokenizer():
    """A Llama-2-style tokenizer: prepend and replace spaces by ▁, BPE with byte fallback, and
    a decoder that fuses the bytes and strips the prepended space. ``\\n``, ∴, 中 and emoji are
    not in its vocabulary, so they become ``<0xNN>`` byte tokens; é is a piece of its own."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    merges = [(SPACE, "t"), ("h", "e"), (SPACE + "t", "he"), (".", SPACE), (SPACE, "a")]
    merges += [("<", "/"), ("c", "a"), ("f", "é"), ("ca", "fé")]
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [SPACE, *string.ascii_letters, *string.digits, *".,+=<>/", "é"]
    pieces += ["".join(m) for m in merges]
    model = models.BPE(
        vocab={p: i for i, p in enumerate(pieces)},
        merges=merges,
        unk_token="<unk>",
        byte_fallback=True,
    )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@cache
def _gpt2_byte_decoder() -> dict[str, int]:
    # GPT-2's printable stand-ins for the 256 bytes (``bytes_to_unicode``), inverted.
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer, ids: list[int], kind: str) -> list[bytes]:
    """Each token's bytes, from its vocabulary string."""
    out = []
    for piece in tokenizer.convert_ids_to_tokens(ids):
        if kind == "byte_level":
            out.append(bytes(_gpt2_byte_decoder()[c] for c in piece))
        elif m := re.fullmatch(r"<0x([0-9A-F]{2})>", piece):
            out.append(bytes([int(m.group(1), 16)]))
        else:
            out.append(piece.replace(SPACE, " ").encode())
    if kind == "byte_fallback" and out and out[0].startswith(b" "):
        out[0] = out[0][1:]  # the decoder strips the space the normalizer prepended
    return out


def byte_truths(text: str, pieces: list[bytes]):
    """Each token's byte span, and its char span: the characters whose first byte it holds."""
    assert b"".join(pieces) == text.encode()
    char_byte = [len(text[:c].encode()) for c in range(len(text) + 1)]
    spans, pos = [], 0
    for p in pieces:
        spans.append((pos, pos + len(p)))
        pos += len(p)

    def chars_started_before(b: int) -> int:
        return sum(1 for c in range(len(text)) if char_byte[c] < b)

    chars = [(chars_started_before(s), chars_started_before(e)) for s, e in spans]
    return spans, chars, char_byte


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    from transformers import AutoTokenizer

    return {
        "byte_level": AutoTokenizer.from_pretrained(tiny_model_dir),
        "byte_fallback": byte_fallback_tokenizer(),
    }


def _steps_of(tok, completion: str):
    ids = tok(completion, add_special_tokens=False)["input_ids"]
    text, offsets = token_char_offsets(tok, ids)
    assert text == completion
    steps, n_think = build_steps(text, offsets, [1.0] * len(ids), split_thinking(text))
    return ids, offsets, steps, n_think


@pytest.mark.parametrize("kind", ["byte_level", "byte_fallback"])
def test_step_opening_with_a_split_character_starts_at_its_first_byte(tokenizers, kind):
    tok = tokenizers[kind]
    completion = "A is 2.\n\n∴ so 中.\n\n😀 ok</think>done"
    ids, offsets, steps, n_think = _steps_of(tok, completion)
    pieces = token_bytes(tok, ids, kind)
    # By hand: the first byte of ∴ (E2) and of 😀 (F0) each open their step.
    opening = [next(i for i, p in enumerate(pieces) if p.startswith(b)) for b in (b"\xe2", b"\xf0")]
    assert len(pieces[opening[0]]) < 3 and len(pieces[opening[1]]) < 4  # really split
    assert [s.text for s in steps] == ["A is 2.", "∴ so 中.", "😀 ok"]
    assert [s.token_start for s in steps] == [0, *opening]
    assert offsets[opening[0]] == (9, 10)  # the E2 token owns ∴ (char 9)
    assert steps[-1].token_end == n_think


def test_token_straddling_a_blank_line_opens_the_next_step():
    # ".\n\nThird" holds the end of one step and the start of the next: it opens the next.
    pieces = ["A", ".\n\nThird", " x", "\n\n", "B", "</think>"]
    text = "".join(pieces)
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    steps, n_think = build_steps(text, offsets, [1.0] * len(pieces), split_thinking(text))
    assert n_think == 5
    assert [(s.text, s.token_start, s.token_end) for s in steps] == [
        ("A.", 0, 1),
        ("Third x", 1, 4),  # the separator-only "\n\n" stays with the step before
        ("B", 4, 5),
    ]


WORDS = ["a", "The", "x.", "café", "∴", "é", "中", "😀", "中文", "∴x", "1+1=2", "—", "数学", "∑"]
WORDS += [" ", "\n"]
SEPARATORS = ["\n\n", "\n\n\n", "\n \n", " \n\t\n ", "\n\n  "]
step_text = (
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)
    .map(lambda ws: re.sub(r"\n\s*\n", "\n", "".join(ws)).strip())
    .filter(bool)
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["byte_level", "byte_fallback"]),
    steps=st.lists(step_text, min_size=1, max_size=5),
    seps=st.lists(st.sampled_from(SEPARATORS), min_size=5, max_size=5),
    lead=st.sampled_from(["", "\n", "\n\n", " "]),
    tail=st.sampled_from(["", "\n", "\n\n"]),
    answer=st.sampled_from(["", "\n\nSo 中.", "∴ 2"]),
)
def test_step_token_spans_follow_the_bytes(tokenizers, kind, steps, seps, lead, tail, answer):
    tok = tokenizers[kind]
    body = steps[0] + "".join(sep + s for sep, s in zip(seps, steps[1:], strict=False))
    thinking = lead + body + tail
    completion = thinking + "</think>" + answer
    ids, offsets, got, n_think = _steps_of(tok, completion)
    byte_spans, char_spans, char_byte = byte_truths(completion, token_bytes(tok, ids, kind))

    assert offsets == char_spans
    assert _quadratic_offsets(tok, ids) == (completion, char_spans)  # the exact fallback agrees
    think_end = char_byte[len(thinking)]
    assert n_think == sum(1 for _, e in byte_spans if e <= think_end)
    assert [s.text for s in got] == steps
    # Step k opens at the token holding the first byte of its first character.
    for s in got[1:]:
        first = char_byte[s.char_start]
        opener = next(i for i, (b0, b1) in enumerate(byte_spans) if b0 <= first < b1)
        assert s.token_start == min(opener, n_think)
    assert got[0].token_start == 0 and got[-1].token_end == n_think
    assert all(a.token_end == b.token_start for a, b in zip(got, got[1:], strict=False))
