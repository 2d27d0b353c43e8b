"""How completions are sampled: ``SamplingOptions`` (the fields generate and bench share), their
checks, the ``SamplingSpec`` of a batch, and ``RESUME_KEYS``, the settings a resumed run keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from stepprune.data.prompts import DEFAULT_PROMPT


@dataclass
class SamplingOptions:
    """How completions are sampled: shared by generate and bench (which runs generate)."""

    backend: str = "hf"  # hf | vllm
    n_samples: int = 1
    greedy: bool = False
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0
    batch_size: int = 8
    dtype: str = "auto"
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    prompt_prefill: str | None = None  # text after the chat template's generation prompt
    thinking_budget: int | None = None  # budget forcing: cut at N tokens, force the answer
    answer_tokens: int | None = None  # with a budget: the forced answer's tokens (None: 64)
    sampling_kwargs: dict = field(default_factory=dict)  # passed to GenerationConfig/SamplingParams
    engine_kwargs: dict = field(default_factory=dict)  # passed to from_pretrained / vllm.LLM

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("n_samples, batch_size and max_new_tokens must be >= 1")
        for name in ("thinking_budget", "answer_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        check_sampling(self.greedy, self.temperature, self.top_p)
        from stepprune.data.prompts import check_template

        check_template(self.prompt_template)


def check_sampling(greedy: bool, temperature: float, top_p: float) -> None:
    """Sampling values an engine would refuse only after loading the model."""
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature} (or --greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sampling_spec(cfg, batch_seed: int):
    from stepprune.backends import SamplingSpec

    return SamplingSpec(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        greedy=cfg.greedy,
        seed=batch_seed,
        extra=dict(cfg.sampling_kwargs),
    )


# Settings that change what a row holds: a resumed run must match the rows already written.
# n_samples may grow (more samples per problem), and batch_size only groups the work.
RESUME_KEYS = ("greedy", "temperature", "top_p", "max_new_tokens", "seed", "dtype")
RESUME_KEYS += ("sampling_kwargs", "prompt_template", "system_prompt", "rescore")
RESUME_KEYS += ("prompt_prefill", "thinking_budget", "answer_tokens")
