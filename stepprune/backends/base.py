"""What every backend returns and takes: ``Completion`` (tokens, text, per-token entropies and
their source) and ``SamplingSpec`` (how to sample one batch)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completion:
    """One generated sequence; all lists are aligned with ``token_ids``."""

    token_ids: list[int]
    entropies: list[float]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    entropy_source: str  # "exact" | "topk"
    entropy_lower: list[float] | None = None
    entropy_upper: list[float] | None = None
    tail_mass: list[float] | None = None
    topk: int | None = None
    topk_logprobs: object = None  # [tokens, k] array from top-k engines; never written to shards


@dataclass
class SamplingSpec:
    """What every backend needs to sample; ``greedy`` overrides temperature and top_p."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    greedy: bool = False
    seed: int = 0
    extra: dict = field(default_factory=dict)
