"""Char offsets of byte-level BPE tokens without decoding twice per token: the fast path of
``cot.steps.token_char_offsets``.

A byte-level tokenizer (GPT-2's scheme: SmolLM2, Qwen, Llama 3) writes every token as a string
of stand-in characters, one per byte. Mapping them back gives each token's bytes; their
concatenation is the completion's UTF-8, and a token owns the characters whose first byte it
carries (the rule of ``cot.steps``). The result is used only when the bytes decode strictly and
the text equals the tokenizer's own decode; anything else (SentencePiece, a completion cut inside
a character, a decoder that cleans up spaces) returns None and the incremental decode runs.
"""

from __future__ import annotations

import bisect


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> stand-in character table, inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTE_DECODER = byte_decoder()


def is_byte_level(tokenizer) -> bool:
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.decoder, decoders.ByteLevel)


def byte_level_offsets(tokenizer, token_ids: list[int], reference: str):
    """(text, spans) from per-token bytes, or None when the fast path does not apply."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    starts, pieces, at = [], [], 0
    for token in tokenizer.convert_ids_to_tokens(token_ids):
        try:
            piece = token.encode() if token in added else bytes(BYTE_DECODER[c] for c in token)
        except (KeyError, TypeError):
            return None
        starts.append(at)
        pieces.append(piece)
        at += len(piece)
    try:
        text = b"".join(pieces).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text != reference:
        return None
    char_bytes, at = [], 0
    for ch in text:
        char_bytes.append(at)
        at += len(ch.encode())
    bounds = [bisect.bisect_left(char_bytes, b) for b in starts] + [len(text)]
    return text, list(zip(bounds[:-1], bounds[1:], strict=True))
