"""The transformers backend: batched left-padded generation with exact per-token entropy.

Entropy is captured by a LogitsProcessor that transformers runs *before* its temperature and
top-p warpers, so it sees the model's raw logits. It keeps only one [batch, vocab] float32
log-prob matrix (to read the sampled token's log-prob on the next call) and one float per token
per sequence, so memory does not grow with generated tokens x vocabulary.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor

from stepprune.backends import Completion, SamplingSpec
from stepprune.cot.entropy import logits_entropy

log = logging.getLogger(__name__)


class EntropyRecorder(LogitsProcessor):
    """Records H and the sampled token's log-prob at every decoding step; never alters scores.

    Values go into buffers preallocated for ``max_steps`` (grown by doubling if needed), not
    into one small tensor per step: thousands of small long-lived allocations interleaved with
    the per-step [batch, vocab] temporaries fragment the heap and make RSS creep up.
    """

    def __init__(self, max_steps: int = 256) -> None:
        self.max_steps = max_steps
        self.steps = 0
        self._ent: torch.Tensor | None = None
        self._lp: torch.Tensor | None = None
        self._prev_logp: torch.Tensor | None = None

    def _ensure(self, batch: int) -> None:
        if self._ent is None:
            self._ent = torch.zeros(self.max_steps, batch, dtype=torch.float32)
            self._lp = torch.zeros(self.max_steps, batch, dtype=torch.float32)
        elif self.steps >= self._ent.shape[0]:
            self._ent = torch.cat([self._ent, torch.zeros_like(self._ent)])
            self._lp = torch.cat([self._lp, torch.zeros_like(self._lp)])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._ensure(scores.shape[0])
        if self._prev_logp is not None:
            self._gather(input_ids[:, -1], self.steps - 1)
        logp, ent = logits_entropy(scores)
        self._ent[self.steps].copy_(ent)
        self._prev_logp = logp
        self.steps += 1
        return scores

    def _gather(self, tokens: torch.Tensor, step: int) -> None:
        picked = self._prev_logp.gather(1, tokens.view(-1, 1).to(self._prev_logp.device))
        self._lp[step].copy_(picked.squeeze(1))

    def finish(self, last_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[steps, batch] entropies and sampled log-probs, once generation is over."""
        if self._prev_logp is not None:
            self._gather(last_tokens, self.steps - 1)
            self._prev_logp = None
        return self._ent[: self.steps], self._lp[: self.steps]


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class HFBackend:
    name = "hf"

    def __init__(
        self, model_path: str, *, dtype: str = "auto", device: str | None = None, **model_kwargs
    ) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=resolve_dtype(dtype, self.device), **model_kwargs
        ).to(self.device)
        self.model.eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.stop_ids = _stop_ids(self.model.generation_config, self.tokenizer)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]

    def generation_config(self, spec: SamplingSpec) -> GenerationConfig:
        # Start clean rather than from the model's defaults, so a hidden top_k or
        # repetition_penalty in generation_config.json cannot change what we sample.
        cfg = dict(
            max_new_tokens=spec.max_new_tokens,
            do_sample=not spec.greedy,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.stop_ids),
            top_k=None,
            return_dict_in_generate=True,
        )
        if not spec.greedy:
            cfg.update(temperature=spec.temperature, top_p=spec.top_p)
        else:
            cfg.update(temperature=None, top_p=None)
        cfg.update(spec.extra)
        return GenerationConfig(**cfg)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        batch = self.tokenizer.pad(
            {"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.device)
        recorder = EntropyRecorder(max_steps=spec.max_new_tokens)
        torch.manual_seed(spec.seed)
        out = self.model.generate(
            **batch,
            generation_config=self.generation_config(spec),
            logits_processor=[recorder],
        )
        new = out.sequences[:, batch["input_ids"].shape[1] :].cpu()
        ent, lp = recorder.finish(new[:, -1])
        return [self._completion(new[b], ent[:, b], lp[:, b]) for b in range(new.shape[0])]

    def _completion(self, ids: torch.Tensor, ent: torch.Tensor, lp: torch.Tensor) -> Completion:
        ids_list = ids.tolist()
        stop_at = next((i for i, t in enumerate(ids_list) if t in self.stop_ids), None)
        n = len(ids_list) if stop_at is None else stop_at + 1
        return Completion(
            token_ids=ids_list[:n],
            entropies=ent[:n].tolist(),
            logprobs=lp[:n].tolist(),
            finish_reason="length" if stop_at is None else "stop",
            entropy_source="exact",
        )


def _stop_ids(gen_cfg, tokenizer) -> set[int]:
    eos = gen_cfg.eos_token_id if gen_cfg is not None else None
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no eos_token_id: cannot tell when a completion ends")
    return ids
