"""The end of a multi-process run: tearing down torch.distributed's default process group.

Owns ``end_process_group``, called by the CLI on every exit path. Left to interpreter exit, a
gloo group dies while Python finalises: a gloo worker thread still releasing a finished
collective's tensors needs the GIL, Python answers a thread that asks for it during
finalisation by ending the thread, and the rank aborts in std::terminate ("terminate called
without an active exception"; pytorch/pytorch#190489). Destroying the group earlier is safe
only if ``destroy_process_group`` drops its last reference, because that binding releases the
GIL while the destructor joins the worker threads. A DDP Reducer that drops it last holds the
GIL during the join and deadlocks against a worker waiting for it. So the trainers' reference
cycles, which hold the DDP model and its Reducer, are collected first. A colocated vLLM engine
(GRPO rollouts) builds process groups of its own over the default one: they go first.
"""

from __future__ import annotations

import gc
import sys


def end_process_group() -> bool:
    """Destroy the default process group if one is alive; True if it was. Imports nothing:
    without torch.distributed loaded there is no group."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    gc.unfreeze()  # a vLLM engine froze the heap at its start: frozen objects are never collected
    gc.collect()  # the DDP models (Reducers) go before the group, not after
    vllm_groups = sys.modules.get("vllm.distributed.parallel_state")
    if vllm_groups is not None:
        # A colocated vLLM engine built its groups over the default one; its exit hook would
        # destroy them after the default group is gone and raise "Invalid process group".
        vllm_groups.destroy_model_parallel()
        vllm_groups.destroy_distributed_environment()  # the default group too, if still alive
    if dist.is_initialized():
        dist.destroy_process_group()
    return True
