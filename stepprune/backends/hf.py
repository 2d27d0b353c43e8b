"""The transformers backend: batched left-padded generation with exact per-token entropy.

Entropy is measured on the model's raw logits, whatever the generation settings: a forward hook
on the model reads each step's last-position logits before transformers runs any logits
processor (its repetition penalty and n-gram bans come before custom processors, and
temperature/top-p after). A LogitsProcessor only marks the step and reads which token was
sampled. The recorder keeps one [batch, vocab] float32 log-prob matrix (to read the sampled
token's log-prob on the next step) and one float per token per sequence, so memory does not
grow with generated tokens x vocabulary.

Sampling ignores the checkpoint's ``generation_config.json``: transformers 5 fills every field a
GenerationConfig leaves ``None`` from it (a hidden ``top_k`` 20, ``repetition_penalty``,
``min_p``, ...), then from global defaults (``top_k`` 50). The backend generates from a blank
model config and passes the neutral values explicitly, so it samples the raw distribution at the
requested temperature and top-p, as the vllm backend does; ``sampling_kwargs`` still apply.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor

from stepprune.backends.base import Completion, SamplingSpec
from stepprune.backends.entropy import logits_entropy

log = logging.getLogger(__name__)

# Every GenerationConfig value that could reshape the distribution, at its "off" setting (None
# is "off" only because the model config it would be filled from is blank). Processors first:
PROCESSORS_OFF = dict(
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    min_new_tokens=0,
    num_beams=1,
    num_return_sequences=1,
    renormalize_logits=False,
    remove_invalid_values=False,
)
# then the warpers, which transformers applies only when sampling (besides temperature, top_p).
WARPERS_OFF = dict(
    top_k=0, min_p=None, top_h=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
)


class EntropyRecorder(LogitsProcessor):
    """Records H and the sampled token's log-prob at every decoding step; never alters scores.

    ``attach`` hooks the model so that each forward pass's last-position raw logits are turned
    into (log-probs, entropy); the processor call (once per sampled token) commits them. Values
    go into buffers preallocated for ``max_steps`` (grown by doubling if needed), not into one
    small tensor per step: thousands of small long-lived allocations interleaved with the
    per-step [batch, vocab] temporaries fragment the heap and make RSS creep up.
    """

    def __init__(self, max_steps: int = 256) -> None:
        self.max_steps = max_steps
        self.steps = 0
        self._ent: torch.Tensor | None = None
        self._lp: torch.Tensor | None = None
        self._prev_logp: torch.Tensor | None = None
        self._raw: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, model) -> torch.utils.hooks.RemovableHandle:
        """Hook ``model``'s forward; remove the returned handle when generation is over."""
        return model.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        # A new tensor, so the forward's (possibly prompt-long) logits are not kept alive.
        self._raw = logits_entropy(output.logits[:, -1])

    def _ensure(self, batch: int) -> None:
        if self._ent is None:
            self._ent = torch.zeros(self.max_steps, batch, dtype=torch.float32)
            self._lp = torch.zeros(self.max_steps, batch, dtype=torch.float32)
        elif self.steps >= self._ent.shape[0]:
            self._ent = torch.cat([self._ent, torch.zeros_like(self._ent)])
            self._lp = torch.cat([self._lp, torch.zeros_like(self._lp)])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._raw is None:
            raise RuntimeError("EntropyRecorder saw no forward pass for this step: attach() it")
        self._ensure(scores.shape[0])
        if self._prev_logp is not None:
            self._gather(input_ids[:, -1], self.steps - 1)
        (logp, ent), self._raw = self._raw, None
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
        # What the checkpoint asks generate() for; ignored (module docstring), kept for the record.
        self.model_defaults = _sampling_defaults(self.model.generation_config)
        self.model.generation_config = GenerationConfig()

    def provenance(self) -> dict:
        """For the run's sampling record: the settings generation forces, and what it ignores."""
        return {
            "hf_generation": {**PROCESSORS_OFF, **WARPERS_OFF},
            "hf_ignored_model_defaults": self.model_defaults,
        }

    def generation_config(self, spec: SamplingSpec) -> GenerationConfig:
        cfg = dict(
            PROCESSORS_OFF,
            max_new_tokens=spec.max_new_tokens,
            do_sample=not spec.greedy,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.stop_ids),
            return_dict_in_generate=True,
        )
        if not spec.greedy:  # warper values with do_sample off only draw "ignored flag" warnings
            cfg.update(WARPERS_OFF, temperature=spec.temperature, top_p=spec.top_p)
        cfg.update(spec.extra)
        return GenerationConfig(**cfg)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        batch = self.tokenizer.pad(
            {"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt"
        ).to(self.device)
        recorder = EntropyRecorder(max_steps=spec.max_new_tokens)
        handle = recorder.attach(self.model)
        torch.manual_seed(spec.seed)
        try:
            out = self.model.generate(
                **batch,
                generation_config=self.generation_config(spec),
                logits_processor=[recorder],
            )
        finally:
            handle.remove()
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


def _sampling_defaults(gen_cfg) -> dict:
    """What a checkpoint's generation config sets (JSON-able), less bookkeeping."""
    diff = gen_cfg.to_diff_dict() if gen_cfg is not None else {}
    skip = {"transformers_version", "_from_model_config"}
    return {k: v for k, v in sorted(diff.items()) if k not in skip}


def _stop_ids(gen_cfg, tokenizer) -> set[int]:
    eos = gen_cfg.eos_token_id if gen_cfg is not None else None
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no eos_token_id: cannot tell when a completion ends")
    return ids
