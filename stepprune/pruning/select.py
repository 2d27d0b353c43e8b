"""Step selection and [SKIP] compression, vectorised over whole shards with polars.

``prune_frame`` is the one pruning path (the prune stage and eval both call it);
``pruned_columns`` turns its output into the ``pruned`` schema's columns.

Rules (README "Pruning"):
- Rank a trajectory's N thinking steps by their score (``pruning.scores``: sum, mean, sampled
  or surprisal), lowest first for ``low`` (the paper), highest first for ``high``, by a seeded
  hash for ``random``, answer-stating steps first for ``answer-first`` (``pruning.facts``; then
  lowest score); ties go to the earlier step. Skip the first floor(kappa*N) of that order
  (``budget="steps"``), or, with ``budget="tokens"``, every step whose cumulative token count in
  that order stays within floor(kappa*T), T the steps' total tokens.
- ``random-matched`` and ``high-matched`` remove as many thinking tokens as ``low`` does on the
  same trajectory at the same kappa (with the same score and budget): in their own order they
  skip the first m steps, m (0 <= m <= N) making the pruned tokens closest to ``low``'s, the
  smaller m on a tie. The achieved difference is reported by eval.
- ``protect_ends`` keeps the first and last step out of the candidates (k <= N-2).
- The compressed thinking keeps every separator and kept step verbatim and puts ``[SKIP]`` in
  place of each pruned step (``merge_skips``: one ``[SKIP]`` per run of pruned steps), so
  kappa=0 returns the original thinking exactly.
- ``token`` strategy: the same number of thinking tokens as ``low`` removes, but chosen as the
  lowest-entropy individual tokens (the paper's step-versus-token control); needs a tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from stepprune.pruning.scores import LOGPROB_SCORES, SCORES, step_scores

SKIP = "[SKIP]"
STRATEGIES = ("low", "high", "random", "token", "random-matched", "high-matched", "answer-first")
MATCHED = ("random-matched", "high-matched")
_EPS = 1e-9  # floor(0.29 * 100) must be 29, not 28

# Generations columns copied unchanged into the pruned schema.
PASSTHROUGH = (
    "problem_id",
    "sample_index",
    "source",
    "problem",
    "gold_answer",
    "model",
    "entropy_source",
    "correct",
)
# The generations columns pruning reads (the token strategy adds token_ids, token_entropies).
ROW_COLUMNS = [
    *PASSTHROUGH,
    "thinking",
    "thinking_char_start",
    "answer_text",
    "n_thinking_tokens",
    "n_tokens",
    "prompt",
    "steps",
    "extracted_answer",
]


def row_columns(strategies, score: str) -> list[str]:
    """The generations columns pruning with these strategies and score reads."""
    extra = ["token_ids", "token_entropies"] if "token" in strategies else []
    return ROW_COLUMNS + extra + (["token_logprobs"] if score in LOGPROB_SCORES else [])


@dataclass(frozen=True)
class PruneSpec:
    kappa: float = 0.8
    strategy: str = "low"
    score: str = "sum"
    budget: str = "steps"
    protect_ends: bool = False
    merge_skips: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.kappa, int | float) and 0.0 <= self.kappa <= 1.0):
            raise ValueError(f"kappa must be in [0, 1], got {self.kappa!r}")
        for name, value, allowed in (
            ("strategy", self.strategy, STRATEGIES),
            ("score", self.score, SCORES),
            ("budget", self.budget, ("steps", "tokens")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def n_to_skip(kappa: float, n: int) -> int:
    return math.floor(kappa * n + _EPS)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _order_key(steps: pl.DataFrame, spec: PruneSpec) -> pl.Series:
    if spec.strategy.startswith("random"):
        with np.errstate(over="ignore"):
            row = steps["_rowhash"].to_numpy().astype(np.uint64)
            idx = steps["index"].to_numpy().astype(np.uint64)
            seed = _splitmix64(np.array([spec.seed], dtype=np.uint64))[0]
            key = _splitmix64(_splitmix64(row ^ seed) + idx)
        return pl.Series("_key", key >> np.uint64(11)).cast(pl.Float64)
    score = steps["_score"]
    return (-score if spec.strategy.startswith("high") else score).alias("_key")


def _ranked(steps: pl.DataFrame, spec: PruneSpec) -> pl.DataFrame:
    """Steps with their rank in the strategy's order (candidates first) and row counts."""
    first = steps["_states"] if spec.strategy == "answer-first" else pl.repeat(False, steps.height)
    df = steps.select("_r", "index", "n_tokens").with_columns(
        _key=_order_key(steps, spec), _pos=pl.int_range(pl.len()), _first=first
    )
    candidate = pl.lit(True)
    if spec.protect_ends:
        candidate = (pl.col("index") > pl.col("index").min().over("_r")) & (
            pl.col("index") < pl.col("index").max().over("_r")
        )
    df = df.with_columns(_cand=candidate, _n=pl.len().over("_r"))
    # Non-candidates sort last; among equal keys the earlier step comes first.
    order = ["_r", "_cand", "_first", "_key", "index"]
    ranked = df.sort(order, descending=[False, True, True, False, False])
    return ranked.with_columns(_rank=pl.int_range(pl.len()).over("_r"))


def select(steps: pl.DataFrame, spec: PruneSpec) -> pl.Series:
    """Boolean skip mask for ``steps`` (one row per step: _r, index, n_tokens, _score...).

    ``steps`` must be ordered by (_r, index); the mask is returned in that order.
    """
    if spec.strategy == "token":
        spec = dataclasses.replace(spec, strategy="low")
    if spec.strategy in MATCHED:
        return _select_matched(steps, spec)
    ranked = _ranked(steps, spec)
    if spec.budget == "steps":
        k = ((pl.col("_n") * spec.kappa) + _EPS).floor().cast(pl.Int64)
        if spec.protect_ends:
            k = pl.min_horizontal(k, pl.col("_cand").sum().over("_r"))
        skip = pl.col("_cand") & (pl.col("_rank") < k)
    else:
        total = pl.col("n_tokens").filter(pl.col("_cand")).sum().over("_r")
        cap = ((total * spec.kappa) + _EPS).floor()
        skip = pl.col("_cand") & (pl.col("n_tokens").cum_sum().over("_r") <= cap)
    return ranked.with_columns(_skip=skip).sort("_pos")["_skip"]


def _select_matched(steps: pl.DataFrame, spec: PruneSpec) -> pl.Series:
    """Skip the prefix of the control's order whose tokens come closest to ``low``'s."""
    low = select(steps, dataclasses.replace(spec, strategy="low"))
    target = steps.select("_r", t=pl.col("n_tokens") * low).group_by("_r").agg(pl.col("t").sum())
    own = dataclasses.replace(spec, strategy=spec.strategy.removesuffix("-matched"))
    ranked = _ranked(steps, own).join(target, on="_r", how="left", maintain_order="left")
    cum = pl.when(pl.col("_cand")).then(pl.col("n_tokens")).otherwise(0).cum_sum().over("_r")
    ranked = ranked.with_columns(_gap=(cum - pl.col("t")).abs().cast(pl.Float64))
    ranked = ranked.with_columns(
        _gap=pl.when(pl.col("_cand")).then(pl.col("_gap")).otherwise(float("inf"))
    )
    best = pl.col("_gap").min().over("_r")
    # m = 0 (skip nothing) wins ties: its gap is the target itself
    m = pl.when(pl.col("t") <= best).then(0).otherwise(pl.col("_gap").arg_min().over("_r") + 1)
    return ranked.with_columns(_skip=pl.col("_rank") < m).sort("_pos")["_skip"]


def compress(rows: pl.DataFrame, steps: pl.DataFrame, mask: pl.Series, merge: bool) -> pl.DataFrame:
    """Per row (_r): compressed_thinking, skip_mask, n_skipped, kept_thinking_tokens."""
    marked = mask | steps["is_skip"]
    s = steps.select("_r", "separator", "text", "n_tokens", "char_end").with_columns(
        _skip=marked, _pruned=mask
    )
    body = pl.when(pl.col("_skip")).then(pl.lit(SKIP)).otherwise(pl.col("text"))
    piece = pl.col("separator") + body
    if merge:
        repeat = pl.col("_skip") & pl.col("_skip").shift(1).over("_r").fill_null(False)
        piece = pl.when(repeat).then(pl.lit("")).otherwise(piece)
    agg = (
        s.with_columns(_piece=piece)
        .group_by("_r", maintain_order=True)
        .agg(
            _head=pl.col("_piece").str.join(""),
            skip_mask=pl.col("_pruned"),
            n_skipped=pl.col("_skip").sum().cast(pl.Int32),
            _pruned_tokens=pl.col("n_tokens").filter(pl.col("_pruned")).sum(),
            _tail=pl.col("char_end").last(),
        )
    )
    cols = ("_r", "thinking", "thinking_char_start", "n_thinking_tokens")
    out = rows.select(cols).join(agg, on="_r", how="left")
    tail = pl.col("thinking").str.slice(
        pl.col("_tail").fill_null(pl.col("thinking_char_start")) - pl.col("thinking_char_start")
    )
    return out.select(
        "_r",
        compressed_thinking=pl.col("_head").fill_null("") + tail,
        skip_mask=pl.col("skip_mask").fill_null(pl.lit([], dtype=pl.List(pl.Boolean))),
        n_skipped=pl.col("n_skipped").fill_null(0),
        kept_thinking_tokens=(
            pl.col("n_thinking_tokens") - pl.col("_pruned_tokens").fill_null(0)
        ).cast(pl.Int32),
    )


def check_unique(df: pl.DataFrame, seen: pl.DataFrame | None, origin) -> pl.DataFrame:
    """Refuse a (problem_id, sample_index) that repeats in ``df`` (with its file rows in _row)
    or was ``seen`` in earlier files; returns the keys seen so far. A repeat (a shard copied
    twice, two runs in one directory) would be trained on, or counted, twice."""
    key = ["problem_id", "sample_index"]
    keys = df.select("_row", *key)
    repeats = keys.filter(pl.struct(key).is_duplicated())
    if seen is not None and not repeats.height:
        repeats = keys.join(seen, on=key, how="semi")
    if repeats.height:
        row = repeats.row(0, named=True)
        raise ValueError(
            f"{origin}: row {row['_row']}: (problem_id, sample_index) = "
            f"({row['problem_id']!r}, {row['sample_index']}) appears more than once in the input"
        )
    return keys.drop("_row") if seen is None else pl.concat([seen, keys.drop("_row")])


def prune_frame(df: pl.DataFrame, spec: PruneSpec, tokenizer, origin, facts: bool = False):
    """``df`` (rows with _row, _r, steps, thinking...) plus the compression columns of ``spec``;
    with ``facts``, also ``pruning.facts.FACT_COLUMNS`` (what was removed, what still states
    the answer).

    The one pruning path shared by ``prune`` and ``eval``; ``origin`` names the file in errors.
    """
    steps = df.select("_r", "steps").explode("steps").drop_nulls("steps").unnest("steps")
    bad = steps.filter(pl.col("entropy_sum").is_nan() | pl.col("entropy_mean").is_nan())
    if bad.height:
        row = df.filter(pl.col("_r") == bad["_r"][0])["_row"][0]
        raise ValueError(f"{origin}: row {row}: step entropy is NaN; no output was written")
    if spec.strategy.startswith("random"):
        import zlib

        keys = [f"{a}\x00{b}" for a, b in zip(df["problem_id"], df["sample_index"], strict=True)]
        hashes = pl.Series("_rowhash", [zlib.crc32(k.encode()) for k in keys], dtype=pl.UInt64)
        steps = steps.join(df.select("_r", hashes), on="_r", how="left", maintain_order="left")
    steps = steps.with_columns(step_scores(df, steps, spec.score))
    if facts or spec.strategy == "answer-first":
        from stepprune.pruning.facts import step_facts

        steps = step_facts(df, steps)
    mask = select(steps, spec)
    comp = compress(df, steps, mask, spec.merge_skips)
    if tokenizer is not None and spec.strategy == "token":
        from stepprune.pruning.tokens import token_compress

        comp = token_compress(df, comp, tokenizer)
    if facts:
        from stepprune.pruning.facts import FACT_COLUMNS, fact_columns, kept_states_answer

        comp = comp.join(fact_columns(df, steps, mask), on="_r", how="left")
        if spec.strategy == "token":  # it drops tokens, not steps: no step facts
            nulls = [pl.lit(None, t).alias(c) for c, t in FACT_COLUMNS.items()]
            comp = comp.with_columns(
                [e for e in nulls if e.meta.output_name() != "kept_states_answer"]
            )
        comp = kept_states_answer(df, comp)
    return df.join(comp, on="_r", how="left", maintain_order="left")


def pruned_columns(df: pl.DataFrame, spec: PruneSpec):
    """The ``pruned`` schema's columns (as Arrow) from ``prune_frame``'s output."""
    answer = pl.col("answer_text").str.strip_chars()
    inner = pl.col("compressed_thinking").str.strip_chars()
    opened = pl.col("prompt").str.strip_chars_end().str.ends_with("<think>")
    completion = (
        pl.when(opened).then(inner).otherwise(pl.lit("<think>\n") + inner)
        + pl.lit("\n</think>\n\n")
        + answer
    )
    n_think = pl.col("n_thinking_tokens")
    ratio = pl.when(n_think > 0).then(pl.col("kept_thinking_tokens") / n_think).otherwise(1.0)
    return df.select(
        *PASSTHROUGH,
        pl.col("thinking").alias("original_thinking"),
        "compressed_thinking",
        "answer_text",
        "skip_mask",
        n_steps=pl.col("skip_mask").list.len().cast(pl.Int32),
        n_skipped="n_skipped",
        original_thinking_tokens=n_think,
        kept_thinking_tokens="kept_thinking_tokens",
        compression_ratio=ratio.cast(pl.Float32),
        kappa=(pl.col("_kappa") if "_kappa" in df.columns else pl.lit(spec.kappa)).cast(pl.Float64),
        strategy=pl.lit(spec.strategy),
        score=pl.lit(spec.score),
        budget=pl.lit(spec.budget),
        seed=pl.lit(spec.seed, pl.Int64),
        prompt="prompt",
        completion=completion,
    ).to_arrow()
