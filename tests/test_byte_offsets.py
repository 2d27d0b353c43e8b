"""The byte-level fast path of token_char_offsets (cot/byte_offsets.py) gives the very text and
spans of the incremental decode it replaces, on real byte-level tokenizers, and steps aside
(None) where it cannot: a completion cut inside a character."""

from __future__ import annotations

import random

import pytest

from stepprune.cot.byte_offsets import byte_level_offsets, is_byte_level
from stepprune.cot.steps import incremental_offsets, token_char_offsets
from stepprune.tiny_model import CORPUS

TEXTS = [
    *CORPUS,
    "Ünïcödé façade — 数学题 😀🧮 x² + y² = z², ∀ε>0 ∃δ.\n\n\n\n[SKIP]\n\n\\boxed{½}",
    "<think>\nWait, 3 × 4 = 12?\n\n</think>\n\nThe answer is $\\boxed{12}$.",
    "  leading spaces, tabs\t\tand trailing   \n\n",
]


def cases(tok, rng: random.Random) -> list[list[int]]:
    """Whole texts, texts with special tokens between them, and random slices (some cut a
    multi-byte character in two)."""
    out = []
    specials = [i for i in tok.all_special_ids if i is not None]
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append(ids)
        out.append([specials[0], *ids, specials[-1], *ids[:5]])
        for _ in range(10):
            a = rng.randrange(len(ids))
            out.append(ids[a : rng.randrange(a, len(ids)) + 1])
    return out


@pytest.fixture(params=["tiny", "smollm2"])
def tokenizer(request, tiny_model_dir):
    from transformers import AutoTokenizer

    if request.param == "tiny":
        return AutoTokenizer.from_pretrained(tiny_model_dir)
    return AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_dir"))


def test_fast_spans_equal_the_incremental_decode(tokenizer):
    assert is_byte_level(tokenizer)
    fast_taken = 0
    for ids in cases(tokenizer, random.Random(0)):
        want = incremental_offsets(tokenizer, ids)
        assert token_char_offsets(tokenizer, ids) == want, ids
        reference = tokenizer.decode(ids, skip_special_tokens=False)
        fast = byte_level_offsets(tokenizer, ids, reference)
        if fast is not None:
            fast_taken += 1
            assert fast == want
    assert fast_taken >= len(TEXTS) * 2  # every whole text, with and without specials


def test_no_tokens_give_no_text_and_no_spans(tokenizer):
    assert token_char_offsets(tokenizer, []) == ("", []) == incremental_offsets(tokenizer, [])


def test_a_cut_character_is_left_to_the_incremental_decode(tokenizer):
    ids = tokenizer("😀", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 2  # both tokenizers spell the emoji's four bytes in several tokens
    reference = tokenizer.decode(ids[:1], skip_special_tokens=False)
    assert byte_level_offsets(tokenizer, ids[:1], reference) is None
    assert token_char_offsets(tokenizer, ids[:1]) == incremental_offsets(tokenizer, ids[:1])
