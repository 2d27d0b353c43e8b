"""The ``token`` pruning control: drop individual lowest-entropy tokens instead of steps.

For the paper's step-versus-token comparison each trajectory loses exactly as many thinking
tokens as step pruning (``low``, same kappa) would remove, but they are the lowest-entropy
tokens wherever they lie (ties: the earlier token goes first). The remaining thinking tokens are
decoded in order. This needs the tokenizer and a per-row loop; it is a control, not a hot path.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from stepprune.cot.steps import THINK_OPEN


def drop_lowest(entropies: np.ndarray, budget: int) -> np.ndarray:
    """Indices (sorted) of the tokens kept after dropping the ``budget`` lowest-entropy ones."""
    order = np.lexsort((np.arange(len(entropies)), entropies))
    return np.sort(order[budget:])


def token_compress(rows: pl.DataFrame, comp: pl.DataFrame, tokenizer) -> pl.DataFrame:
    """Replace ``comp``'s step-pruned text by token-pruned text with the same token budget."""
    merged = rows.select("_r", "token_ids", "token_entropies", "n_thinking_tokens").join(
        comp, on="_r", how="left", maintain_order="left"
    )
    texts = []
    for ids, ent, n_think, kept in zip(
        merged["token_ids"],
        merged["token_entropies"],
        merged["n_thinking_tokens"],
        merged["kept_thinking_tokens"],
        strict=True,
    ):
        think_ids = np.asarray(ids[:n_think])
        keep = drop_lowest(np.asarray(ent[:n_think], dtype=np.float64), n_think - kept)
        text = tokenizer.decode(think_ids[keep].tolist(), skip_special_tokens=False)
        # Thinking tokens start at the completion's first token, so they hold the opening
        # <think> when the completion writes it; the thinking text itself does not.
        texts.append(text.removeprefix(THINK_OPEN))
    return comp.with_columns(
        compressed_thinking=pl.Series(texts, dtype=pl.String),
        skip_mask=pl.col("skip_mask").list.eval(pl.lit(False)),
        n_skipped=pl.lit(0, pl.Int32),
    )
