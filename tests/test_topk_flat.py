"""vLLM's flat log-prob output (``flat_logprobs=True``) gives the very top-k matrix and sampled
log-probs that the per-token dicts give (backends/vllm.py), on records shaped as vLLM makes
them: the top k by rank, plus the sampled token when it lies outside them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from stepprune.backends.vllm import topk_matrix, topk_matrix_flat


@dataclass
class Logprob:
    logprob: float
    rank: int | None


@dataclass
class Flat:  # vllm.logprobs.FlatLogprobs' fields, filled as vLLM's append_fast does
    start_indices: list = field(default_factory=list)
    end_indices: list = field(default_factory=list)
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    ranks: list = field(default_factory=list)

    def append(self, sampled: tuple, topk: list[tuple]) -> None:
        """The sampled (token, logprob, rank) first, then the top k: a sampled token inside
        the top k is written twice, as vLLM 0.32 does (append_logprobs_for_next_position)."""
        self.start_indices.append(len(self.logprobs))
        for token, lp, rank in [sampled, *topk]:
            self.token_ids.append(token)
            self.logprobs.append(lp)
            self.ranks.append(rank)
        self.end_indices.append(len(self.logprobs))


def records(n: int, k: int, rng: random.Random) -> tuple[list[dict], Flat, list[int]]:
    """The same positions as vLLM's dicts and as its flat lists."""
    dicts, flat, ids = [], Flat(), []
    for _ in range(n):
        vocab = rng.sample(range(5000), k + 1)
        values = sorted((rng.choice([-0.5, -1.0, rng.uniform(-9, 0)]) for _ in vocab), reverse=True)
        topk = [(t, v, r + 1) for r, (t, v) in enumerate(zip(vocab[:k], values, strict=False))]
        if rng.random() < 0.3:  # sampled outside the top k, with its own rank
            sampled = (vocab[k], values[-1] - 1.0, k + rng.randint(1, 50))
        else:
            sampled = rng.choice(topk)
        entry = {t: Logprob(v, r) for t, v, r in [sampled, *topk]}  # a dict keeps one copy
        dicts.append(entry)
        flat.append(sampled, topk)
        ids.append(sampled[0])
    return dicts, flat, ids


def test_flat_and_dict_records_give_the_same_arrays():
    rng = random.Random(0)
    for k in (1, 5, 20):
        dicts, flat, ids = records(300, k, rng)
        assert len(flat.logprobs) > sum(len(d) for d in dicts)  # duplicates in the flat lists
        top, sampled = topk_matrix(dicts, ids, k)
        flat_top, flat_sampled = topk_matrix_flat(flat, ids, k)
        np.testing.assert_array_equal(flat_top, top)
        np.testing.assert_array_equal(flat_sampled, sampled)
        assert np.isfinite(top[:, 0]).all() and (np.diff(top, axis=1) <= 0).all()
