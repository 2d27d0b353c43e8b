"""The ``[SKIP]`` token in a model's vocabulary: added, padded to a multiple of 64, initialised.

This module owns everything that makes a base model able to read and write ``[SKIP]`` as one
token: adding it to the tokenizer as an extra special token (never split, kept when decoding
with ``skip_special_tokens=False``), growing the embedding matrix to a multiple of 64, setting
the new rows, naming the rows LoRA must train, checking a saved model, and encoding a prompt
whose problem quotes "[SKIP]" as text (``plain_text_encoder``).

Why a multiple of 64: an embedding with an odd row count (49153 for SmolLM2 plus one token) is
padded differently by different libraries; TRL and vLLM issues report broken training and
failed weight loading for such vocabularies, and GPUs are faster on aligned shapes.

Why the mean: every new row, input and output, starts as the mean of the rows of the tokens
the tokenizer already had (unused padding rows excluded). As an output row, the mean gives the
new token roughly an average logit, so the fine-tuned model's distribution starts where the
base model's was instead of being dominated by a random row (Hewitt, "Initializing new word
embeddings for pretrained language models", 2021); as an input row, it is a vector the model
has seen the like of. ``resize_token_embeddings``'s own ``mean_resizing`` samples from a
Gaussian fitted to the rows (random, and costly for a 3584-wide covariance); the plain mean is
deterministic. With DeepSpeed ZeRO-2 every rank holds full parameters, so this runs unchanged;
ZeRO-3 would need the weights gathered first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stepprune.cot.steps import SKIP_TOKEN

log = logging.getLogger(__name__)

VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class SkipToken:
    """``[SKIP]`` in one tokenizer: its id, and whether ``add_skip_token`` put it there."""

    token_id: int
    added: bool  # False: the tokenizer already had it (e.g. a stepprune SFT model)
    base_size: int  # len(tokenizer) before: the rows whose mean starts new rows
    size: int  # len(tokenizer) after


def padded_rows(rows: int, tokenizer_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Embedding rows needed: room for every token, rounded up; never fewer than ``rows``."""
    need = max(rows, tokenizer_size)
    return -(-need // multiple) * multiple


def skip_token_id(tokenizer) -> int:
    """The id of ``[SKIP]``; an error unless the tokenizer encodes it as exactly that one token."""
    ids = tokenizer.encode(f"a {SKIP_TOKEN}b", add_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(SKIP_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id or ids.count(token_id) != 1:
        raise ValueError(f"the tokenizer does not encode {SKIP_TOKEN} as a single token")
    return token_id


def plain_text_encoder(tokenizer):
    """A ``tokenizers.Tokenizer``: ``tokenizer``'s Rust backend with ``[SKIP]`` removed from its
    added tokens, or None when it has no added ``[SKIP]`` (or no Rust backend).

    A problem that quotes "[SKIP]" must reach the model as the base model read it, as text;
    ``tokenizer`` itself would encode it as the token that marks a skipped step. The [SKIP]
    token sits outside the backend's vocabulary, so without it every other id is unchanged and
    a prompt encodes exactly as the base tokenizer encodes it (the chat template's own special
    tokens stay special). Padding and truncation are off: callers encode whole prompts.
    """
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    data = json.loads(backend.to_str())
    added = data.get("added_tokens") or []
    kept = [t for t in added if t["content"] != SKIP_TOKEN]
    if len(kept) == len(added):
        return None
    from tokenizers import Tokenizer

    data["added_tokens"] = kept
    encoder = Tokenizer.from_str(json.dumps(data))
    encoder.no_padding()
    encoder.no_truncation()
    return encoder


def add_skip_token(tokenizer) -> SkipToken:
    """Add ``[SKIP]`` to ``tokenizer`` as an extra special token unless it has it; in place."""
    base_size = len(tokenizer)
    added = SKIP_TOKEN not in tokenizer.get_vocab()
    if added:
        # replace_extra_special_tokens=False: the default would demote the model's own extra
        # special tokens (Qwen's <|im_start|>, ...) to ordinary ones in the saved tokenizer.
        tokenizer.add_special_tokens(
            {"extra_special_tokens": [SKIP_TOKEN]}, replace_extra_special_tokens=False
        )
    return SkipToken(skip_token_id(tokenizer), added, base_size, len(tokenizer))


def fit_embeddings(model, token: SkipToken) -> tuple[int, int]:
    """Grow ``model``'s embeddings to hold ``token``'s tokenizer, padded to a multiple of 64,
    and start every new row at the mean (module docstring); (rows before, rows after)."""
    before = model.get_input_embeddings().weight.shape[0]
    after = padded_rows(before, token.size)
    if after != before:
        model.resize_token_embeddings(after, pad_to_multiple_of=VOCAB_MULTIPLE, mean_resizing=False)
    fresh = set(range(before, after)) | ({token.token_id} if token.added else set())
    if fresh:
        init_rows_to_mean(model, sorted(fresh), n_real=min(token.base_size, before))
    log.info(
        "[SKIP] is token %d (%s); embedding rows %d -> %d",
        token.token_id,
        "added" if token.added else "already present",
        before,
        after,
    )
    return before, after


def init_rows_to_mean(model, rows: list[int], n_real: int) -> None:
    """Set ``rows`` of the input and output embeddings to the mean of their first ``n_real``."""
    import torch

    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:  # tied: one matrix, set once
        weights.append(head.weight)
    index = torch.tensor(rows, device=weights[0].device)
    with torch.no_grad():
        for w in weights:
            mean = w[:n_real].float().mean(dim=0).to(w.dtype)
            w[index] = mean


def lora_token_targets(model, token_id: int) -> dict[str, list[int]]:
    """PEFT ``trainable_token_indices``: the [SKIP] row of the input embedding and output head.

    A tied output head is left out: PEFT ties it to the embedding's trainable row itself.
    """
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    targets = {names[id(embed)]: [token_id]}
    if head is not None and head.weight is not embed.weight:
        targets[names[id(head)]] = [token_id]
    return targets


def check_saved_model(path) -> int:
    """Load a saved tokenizer and config; raise unless [SKIP] is one token that the embedding
    holds and the vocabulary is padded to a multiple of 64. Returns the token id."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    token_id = skip_token_id(tokenizer)
    rows = AutoConfig.from_pretrained(path).get_text_config().vocab_size
    if rows % VOCAB_MULTIPLE or rows < len(tokenizer):
        raise ValueError(
            f"{path}: vocab_size {rows} is not a multiple of {VOCAB_MULTIPLE} "
            f"holding all {len(tokenizer)} tokens"
        )
    return token_id
