"""Generation backends: one interface, per-engine modules imported lazily.

A backend turns token-id prompts into completions with per-token entropies. ``hf`` computes
the exact full-vocabulary entropy; ``vllm`` returns a top-k estimate with bounds, which
``rescore`` can turn into exact values by a teacher-forced pass.
"""

from __future__ import annotations

from stepprune.backends.base import Completion, SamplingSpec

__all__ = ["Completion", "SamplingSpec", "load_backend"]


def load_backend(name: str, model_path: str, **options):
    if name == "hf":
        from stepprune.backends.hf import HFBackend

        return HFBackend(model_path, **options)
    if name == "vllm":
        from stepprune.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, **options)
    raise ValueError(f"unknown backend {name!r}; known: hf, vllm")
