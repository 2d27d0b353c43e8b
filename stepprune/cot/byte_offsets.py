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
    import numpy as np

    if not token_ids:
        return ("", []) if reference == "" else None
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    memo: dict[int, bytes] = {}  # a completion repeats its tokens: map each id once
    pieces = []
    for token_id, token in zip(token_ids, tokenizer.convert_ids_to_tokens(token_ids), strict=True):
        piece = memo.get(token_id)
        if piece is None:
            try:
                piece = token.encode() if token in added else bytes(BYTE_DECODER[c] for c in token)
            except (KeyError, TypeError):
                return None
            memo[token_id] = piece
        pieces.append(piece)
    data = b"".join(pieces)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text != reference:
        return None
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    starts = np.cumsum(lengths) - lengths  # each token's first byte
    if len(text) == len(data):  # ASCII: one byte per char
        bounds = starts
    else:  # chars begun before each byte: the char a token's first byte falls in or after
        lead = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80
        bounds = np.concatenate([[0], np.cumsum(lead)])[starts]
    ends = np.append(bounds[1:], len(text))
    return text, list(zip(bounds.tolist(), ends.tolist(), strict=True))
